package certs

import (
	"bytes"
	"encoding/pem"
	"testing"
	"time"
)

func TestMergeCABundle(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ca := func(validity time.Duration) []byte {
		t.Helper()
		b, err := Generate(Options{Hosts: []string{"localhost"}, Now: now, Validity: validity})
		if err != nil {
			t.Fatal(err)
		}
		return b.CACert
	}
	own, a, b, c := ca(time.Hour), ca(time.Hour), ca(time.Hour), ca(time.Hour)
	expired := ca(time.Minute) // at now+2m
	cat := func(pems ...[]byte) []byte { return bytes.Join(pems, nil) }

	cases := []struct {
		name        string
		current     []byte
		max         int
		want        []byte
		wantChanged bool
	}{
		{"empty bundle gets the CA", nil, 10, own, true},
		{"CA goes in front of the others", cat(a, b), 10, cat(own, a, b), true},
		{"already trusted: untouched", cat(a, own, b), 10, cat(a, own, b), false},
		{"oldest fall off past max", cat(a, b, c), 3, cat(own, a, b), true},
		{"expired ones are dropped", cat(a, expired), 10, cat(own, a), true},
		{"expired dropped even when trusted", cat(own, expired, a), 10, cat(own, a), true},
		{"duplicates dropped", cat(own, a, a), 10, cat(own, a), true},
		{"garbage dropped", cat([]byte("not pem\n"), a), 10, cat(own, a), true},
		{"a non-certificate block dropped", cat(pemBlock("PRIVATE KEY", []byte{1}), own), 10, own, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, changed, err := MergeCABundle(tc.current, own, tc.max, now.Add(2*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if changed != tc.wantChanged || !bytes.Equal(got, tc.want) {
				t.Errorf("changed=%v, %d certificates; want changed=%v, %d certificates (order matters)",
					changed, count(got), tc.wantChanged, count(tc.want))
			}
			if !Trusts(got, own) {
				t.Error("the merged bundle does not trust the CA")
			}
		})
	}
}

// Replicas with their own CA that each merge whatever the others wrote settle on a bundle
// that trusts them all, after which none writes again, as long as max holds them all; with
// more replicas than max (the control) they push each other out forever. The chart sizes
// --max-bundle-cas from replicaCount for this reason.
func TestMergeCABundleReplicasSettle(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		replicas, max int
		settle        bool
	}{
		{2, MaxBundleCAs, true},
		{MaxBundleCAs, MaxBundleCAs, true},
		{MaxBundleCAs + 1, MaxBundleCAs, false},
		{MaxBundleCAs + 1, 2 * (MaxBundleCAs + 2), true}, // what the chart sets for 11 replicas
	} {
		var replicas [][]byte
		for range c.replicas {
			b, err := Generate(Options{Hosts: []string{"localhost"}})
			if err != nil {
				t.Fatal(err)
			}
			replicas = append(replicas, b.CACert)
		}
		var bundle []byte
		writes, lastWriteRound := 0, -1
		for round := range 5 {
			for _, ca := range replicas {
				merged, changed, err := MergeCABundle(bundle, ca, c.max, now)
				if err != nil {
					t.Fatal(err)
				}
				if changed {
					writes++
					lastWriteRound = round
				}
				bundle = merged
			}
		}
		trustsAll := true
		for _, ca := range replicas {
			trustsAll = trustsAll && Trusts(bundle, ca)
		}
		settled := lastWriteRound == 0 && writes == c.replicas && trustsAll
		if settled != c.settle {
			t.Errorf("%d replicas, max %d: settled=%v (writes %d, last in round %d, trusts all %v), want %v",
				c.replicas, c.max, settled, writes, lastWriteRound, trustsAll, c.settle)
		}
	}
}

func TestMergeCABundleRejectsABadCA(t *testing.T) {
	if _, _, err := MergeCABundle(nil, []byte("nope"), MaxBundleCAs, time.Now()); err == nil {
		t.Fatal("a CA that is not PEM must be an error, not an empty bundle")
	}
}

func count(bundle []byte) int {
	n := 0
	for rest := bundle; ; n++ {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return n
		}
	}
}
