package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestEnsure(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	hosts := []string{"emissary-istio-webhook.emissary-istio-system.svc", "127.0.0.1"}
	opts := Options{Hosts: hosts, Now: now, Validity: 30 * 24 * time.Hour}
	margin := 7 * 24 * time.Hour

	dir := t.TempDir()
	ca, why, err := Ensure(dir, opts, margin)
	if err != nil || why == "" {
		t.Fatalf("empty directory: why=%q err=%v; want a new certificate", why, err)
	}
	if _, err := Verify(dir, hosts, margin, now); err != nil {
		t.Fatalf("Ensure wrote a certificate Verify rejects: %v", err)
	}
	again, why, err := Ensure(dir, opts, margin)
	if err != nil || why != "" || !bytes.Equal(again, ca) {
		t.Fatalf("valid directory: why=%q err=%v same CA=%v; want it kept", why, err, bytes.Equal(again, ca))
	}

	// Each case breaks one thing about the directory's certificate; Ensure must replace it.
	other, err := Generate(opts)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		opts  Options
		spoil func(dir string)
	}{
		{"expires within the margin", Options{Hosts: hosts, Now: now.Add(25 * 24 * time.Hour), Validity: opts.Validity}, nil},
		{"a host is missing", Options{Hosts: append(hosts, "emissary-istio-webhook.emissary-istio-system.svc.cluster.local"), Now: now, Validity: opts.Validity}, nil},
		{"ca.crt is another CA", opts, func(dir string) { write(t, dir, CAFile, other.CACert) }},
		{"ca.crt is missing", opts, func(dir string) { _ = os.Remove(filepath.Join(dir, CAFile)) }},
		{"key does not match", opts, func(dir string) { write(t, dir, KeyFile, other.KeyPEM) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, _, err := Ensure(dir, opts, margin); err != nil {
				t.Fatal(err)
			}
			if tc.spoil != nil {
				tc.spoil(dir)
			}
			_, why, err := Ensure(dir, tc.opts, margin)
			if err != nil || why == "" {
				t.Fatalf("why=%q err=%v; want a new certificate", why, err)
			}
			if _, err := Verify(dir, tc.opts.Hosts, margin, tc.opts.Now); err != nil {
				t.Fatalf("the new certificate does not verify: %v", err)
			}
		})
	}
}

func TestReissueKeepsTheCA(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	first, err := Generate(Options{Hosts: []string{"localhost"}, Now: now, Validity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	second, err := first.Reissue(Options{Hosts: []string{"localhost"}, Now: now.Add(time.Hour), Validity: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(second.CACert, first.CACert) {
		t.Fatal("Reissue changed the CA")
	}
	a, b := leaf(t, first.CertPEM), leaf(t, second.CertPEM)
	if a.SerialNumber.Cmp(b.SerialNumber) == 0 || bytes.Equal(first.KeyPEM, second.KeyPEM) {
		t.Fatal("Reissue must make a new key and serial")
	}
	pool, err := CAPool(first.CACert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: pool, CurrentTime: now.Add(2 * time.Hour)}); err != nil {
		t.Fatalf("the reissued certificate does not verify against the original CA: %v", err)
	}
	if !b.NotAfter.Equal(second.NotAfter) || b.NotAfter.After(leaf(t, first.CACert).NotAfter) {
		t.Fatalf("reissued NotAfter %s outlives the CA", b.NotAfter)
	}
	if _, err := (&Bundle{CertPEM: first.CertPEM}).Reissue(Options{Hosts: []string{"localhost"}}); err == nil {
		t.Fatal("a bundle without the CA key cannot reissue")
	}
}

func leaf(t *testing.T, pemData []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(pemData)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func write(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}
