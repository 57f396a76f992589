package certs

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
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

// TestWriteDirNeverShowsAMix: while WriteDir replaces one bundle with another (each with its
// own CA, as a --self-signed renewal does), a concurrent Load always gets one bundle's
// certificate, key and CA, never a mix of two.
func TestWriteDirNeverShowsAMix(t *testing.T) {
	bundles := make([]*Bundle, 3)
	for i := range bundles {
		b, err := Generate(Options{Hosts: []string{"localhost"}})
		if err != nil {
			t.Fatal(err)
		}
		bundles[i] = b
	}
	dir := t.TempDir()
	if err := bundles[0].WriteDir(dir); err != nil {
		t.Fatal(err)
	}

	const writes = 300
	var reads, mixes atomic.Int64
	var firstMix atomic.Value
	done := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				reads.Add(1)
				if err := loadConsistent(dir); err != nil {
					mixes.Add(1)
					firstMix.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	for i := 1; i <= writes; i++ {
		if err := bundles[i%len(bundles)].WriteDir(dir); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	readers.Wait()
	t.Logf("%d writes, %d reads, %d inconsistent", writes, reads.Load(), mixes.Load())
	if mixes.Load() != 0 {
		t.Fatalf("%d of %d reads saw a mix of two bundles; first: %v", mixes.Load(), reads.Load(), firstMix.Load())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) > 5 { // the three names, the current generation and its link
		t.Errorf("old generations are left behind: %d entries", len(entries))
	}
}

// loadConsistent loads dir and checks that its key, certificate and CA belong together.
func loadConsistent(dir string) error {
	pair, ca, err := Load(dir) // fails when the key does not match the certificate
	if err != nil {
		return err
	}
	leafCert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return err
	}
	block, _ := pem.Decode(ca)
	if block == nil {
		return errors.New("ca.crt holds no certificate")
	}
	caCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	if err := leafCert.CheckSignatureFrom(caCert); err != nil {
		return fmt.Errorf("ca.crt did not sign tls.crt: %w", err)
	}
	return nil
}
