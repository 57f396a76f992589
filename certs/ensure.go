package certs

import (
	"crypto/x509"
	"fmt"
	"time"
)

// Ensure makes sure dir holds a serving certificate that ca.crt in dir verifies for every
// host of opts.Hosts, valid for at least margin more; if not, it writes a new CA and
// serving certificate there (Generate). It returns the CA certificate (PEM), whether it
// generated one, and why it did (for the log).
//
// `webhook serve --self-signed` calls it at start: a container restart in the same pod finds
// its certificate and keeps its CA; a new pod makes its own.
func Ensure(dir string, opts Options, margin time.Duration) (ca []byte, why string, err error) {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	ca, verr := Verify(dir, opts.Hosts, margin, now)
	if verr == nil {
		return ca, "", nil
	}
	b, err := Generate(opts)
	if err != nil {
		return nil, "", err
	}
	if err := b.WriteDir(dir); err != nil {
		return nil, "", err
	}
	return b.CACert, verr.Error(), nil
}

// Verify checks that dir holds a key pair whose certificate ca.crt (in dir) verifies for
// every host, now and margin from now, and returns ca.crt. It is the one rule for "this
// certificate is still good": Ensure applies it at start and the --self-signed keeper
// before every renewal.
func Verify(dir string, hosts []string, margin time.Duration, now time.Time) ([]byte, error) {
	pair, ca, err := Load(dir)
	if err != nil {
		return nil, err
	}
	if len(ca) == 0 {
		return nil, fmt.Errorf("certs: %s has no %s", dir, CAFile)
	}
	pool, err := CAPool(ca)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", CertFile, err)
	}
	for _, at := range []time.Time{now, now.Add(margin)} {
		for _, h := range hosts {
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: pool, CurrentTime: at}); err != nil {
				return nil, fmt.Errorf("certs: %s at %s: %w", CertFile, at.UTC().Format(time.RFC3339), err)
			}
		}
	}
	return ca, nil
}
