package certs

import (
	// Accept -update like every test package, so that `go test ./... -update` runs.
	_ "github.com/emissary-istio/emissary-istio-webhook/test/golden"

	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestGenerateWriteLoadVerify(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	hosts := []string{"webhook.emissary-istio-system.svc", "127.0.0.1"}
	b, err := Generate(Options{Hosts: hosts, Now: now, Validity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := b.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	pair, ca, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := CAPool(ca)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: pool, CurrentTime: now.Add(time.Hour)}); err != nil {
			t.Errorf("verify %s: %v", h, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: pool, CurrentTime: now}); err == nil {
		t.Error("certificate must not verify for a host it was not made for")
	}
}

func TestNeedsRenewal(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	hosts := []string{"localhost"}
	if !NeedsRenewal(dir, hosts, time.Hour, now) {
		t.Fatal("an empty directory needs a certificate")
	}
	b, err := Generate(Options{Hosts: hosts, Validity: 48 * time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		hosts  []string
		margin time.Duration
		want   bool
	}{
		{"fresh", hosts, time.Hour, false},
		{"inside margin", hosts, 72 * time.Hour, true},
		{"new host", []string{"localhost", "webhook.svc"}, time.Hour, true},
	}
	for _, c := range cases {
		if got := NeedsRenewal(dir, c.hosts, c.margin, now); got != c.want {
			t.Errorf("%s: NeedsRenewal = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestGenerateNeedsAHost(t *testing.T) {
	if _, err := Generate(Options{}); err == nil {
		t.Fatal("want an error without hosts")
	}
}

func TestCAPoolRejectsGarbage(t *testing.T) {
	if _, err := CAPool([]byte("not a certificate")); err == nil {
		t.Fatal("want an error")
	}
}
