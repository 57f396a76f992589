// Package certs makes and loads the webhook's TLS material where cert-manager is not
// available: local runs, envtest, and `webhook serve --self-signed`. It writes the same file
// names a cert-manager Certificate Secret mounts (tls.crt, tls.key, ca.crt), so the server
// reads one layout whichever way the files were made.
package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names inside a certificate directory, as in a kubernetes.io/tls Secret.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
	CAFile   = "ca.crt"
)

// Bundle is a CA and a serving certificate it signed, PEM encoded.
type Bundle struct {
	CACert   []byte
	CAKey    []byte
	CertPEM  []byte
	KeyPEM   []byte
	NotAfter time.Time
}

// Options says what the serving certificate is for.
type Options struct {
	// Hosts are DNS names and IP addresses the certificate must be valid for.
	Hosts []string
	// Validity of both certificates; zero means one year.
	Validity time.Duration
	// Now is the start of validity; zero means time.Now. Set by tests.
	Now time.Time
}

// Generate makes a fresh self-signed CA and a serving certificate for opts.Hosts.
func Generate(opts Options) (*Bundle, error) {
	if len(opts.Hosts) == 0 {
		return nil, errors.New("certs: at least one host is required")
	}
	notBefore, notAfter := opts.validity()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "emissary-istio-webhook-ca"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: CA certificate: %w", err)
	}
	caKeyPEM, err := keyPEM(caKey)
	if err != nil {
		return nil, err
	}
	ca := &Bundle{CACert: pemBlock("CERTIFICATE", caDER), CAKey: caKeyPEM}
	return ca.Reissue(opts)
}

// Reissue makes a new serving key and certificate for opts.Hosts signed by b's CA, as
// cert-manager's CA issuer does on renewal: the CA, and so every caBundle that trusts it,
// stays the same. The validity is capped at the CA's.
func (b *Bundle) Reissue(opts Options) (*Bundle, error) {
	if len(opts.Hosts) == 0 {
		return nil, errors.New("certs: at least one host is required")
	}
	caCert, caKey, err := b.parseCA()
	if err != nil {
		return nil, err
	}
	notBefore, notAfter := opts.validity()
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: opts.Hosts[0]},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range opts.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: serving certificate: %w", err)
	}
	servingKeyPEM, err := keyPEM(key)
	if err != nil {
		return nil, err
	}
	return &Bundle{
		CACert:   b.CACert,
		CAKey:    b.CAKey,
		CertPEM:  pemBlock("CERTIFICATE", der),
		KeyPEM:   servingKeyPEM,
		NotAfter: notAfter,
	}, nil
}

// validity is the certificates' validity window: from a minute before opts.Now (clock skew)
// for opts.Validity.
func (opts Options) validity() (notBefore, notAfter time.Time) {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	validity := opts.Validity
	if validity == 0 {
		validity = 365 * 24 * time.Hour
	}
	return now.Add(-time.Minute), now.Add(validity)
}

func (b *Bundle) parseCA() (*x509.Certificate, crypto.Signer, error) {
	certBlock, _ := pem.Decode(b.CACert)
	keyBlock, _ := pem.Decode(b.CAKey)
	if certBlock == nil || keyBlock == nil {
		return nil, nil, errors.New("certs: the bundle has no CA certificate and key to sign with")
	}
	cert, err := x509.ParseCertificate(certBlock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: CA certificate: %w", err)
	}
	key, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: CA key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("certs: CA key of type %T cannot sign", key)
	}
	return cert, signer, nil
}

// WriteDir writes tls.crt, tls.key and ca.crt into dir (created if missing). The key is
// written 0600. Each file is replaced atomically (write then rename), so a server watching
// the directory never reads half a certificate.
func (b *Bundle) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CAFile, b.CACert, 0o644},
		{KeyFile, b.KeyPEM, 0o600},
		{CertFile, b.CertPEM, 0o644},
	}
	for _, f := range files {
		if err := writeAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// Load reads a certificate directory and checks that the key matches the certificate.
// It returns the CA bundle (ca.crt, or nil when the directory has none).
func Load(dir string) (tls.Certificate, []byte, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("certs: loading %s: %w", dir, err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return tls.Certificate{}, nil, fmt.Errorf("certs: %w", err)
	}
	return pair, ca, nil
}

// NeedsRenewal reports whether the serving certificate in dir is missing, unreadable, not
// valid for every host, or expires within margin.
func NeedsRenewal(dir string, hosts []string, margin time.Duration, now time.Time) bool {
	pair, _, err := Load(dir)
	if err != nil || len(pair.Certificate) == 0 {
		return true
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return true
	}
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			return true
		}
	}
	return now.Add(margin).After(cert.NotAfter)
}

// CAPool returns a pool holding the PEM certificates in ca, for clients of the webhook.
func CAPool(ca []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("certs: no PEM certificate in CA bundle")
	}
	return pool, nil
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("certs: encoding key: %w", err)
	}
	return pemBlock("PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	var buf bytes.Buffer
	_ = pem.Encode(&buf, &pem.Block{Type: typ, Bytes: der})
	return buf.Bytes()
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on supported platforms; a fixed serial is still valid.
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("certs: writing %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("certs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
