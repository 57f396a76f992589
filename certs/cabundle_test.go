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

// Two replicas with their own CA that each merge whatever the other wrote settle on a bundle
// that trusts both, after which neither writes again.
func TestMergeCABundleReplicasSettle(t *testing.T) {
	now := time.Now()
	var replicas [][]byte
	for range 2 {
		b, err := Generate(Options{Hosts: []string{"localhost"}})
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, b.CACert)
	}
	var bundle []byte
	writes := 0
	for round := range 5 {
		for _, ca := range replicas {
			merged, changed, err := MergeCABundle(bundle, ca, MaxBundleCAs, now)
			if err != nil {
				t.Fatal(err)
			}
			if changed {
				writes++
				if round > 0 {
					t.Fatalf("round %d: a replica still rewrites the bundle", round)
				}
			}
			bundle = merged
		}
	}
	if writes != 2 || !Trusts(bundle, replicas[0]) || !Trusts(bundle, replicas[1]) {
		t.Fatalf("writes=%d, trusts both=%v %v; want 2 writes and both trusted", writes, Trusts(bundle, replicas[0]), Trusts(bundle, replicas[1]))
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
