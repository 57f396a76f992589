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

// dataLink is the symlink to the directory holding the current files, as in the volume the
// kubelet makes of a Secret (k8s.io/kubernetes/pkg/volume/util AtomicWriter): tls.crt,
// tls.key and ca.crt are symlinks to "..data/<name>", and "..data" points at one generation,
// a hidden directory whose files never change once it is in place.
const dataLink = "..data"

// WriteDir writes b's tls.crt, tls.key (0600) and ca.crt into dir (created if missing), as
// the kubelet writes a Secret volume: into a new hidden directory, then one rename of the
// "..data" symlink makes them current together.
//
// What a reader sees, precisely: at every instant the three names resolve to one bundle,
// the previous or b, never a mix. A reader that opens them one after the other can still
// straddle the rename; Load does not (it reads again when "..data" moved meanwhile), and
// controller-runtime's certwatcher, which opens tls.crt and then tls.key, gets a key that
// does not match, keeps serving the previous pair and reads again on the next event (the
// old generation's removal) or poll. When WriteDir returns an error the previous bundle is
// still the one in place, with one exception: the first write into a directory of plain
// files (not written this way) turns the names into links one at a time.
func (b *Bundle) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	gen, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
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
		if err := writeFile(filepath.Join(gen, f.name), f.data, f.mode); err != nil {
			os.RemoveAll(gen)
			return err
		}
	}
	// The generation's files are complete: make it current in one rename.
	previous, _ := os.Readlink(filepath.Join(dir, dataLink))
	if err := replaceWithSymlink(filepath.Join(dir, dataLink), filepath.Base(gen)); err != nil {
		os.RemoveAll(gen)
		return err
	}
	for _, f := range files {
		link, target := filepath.Join(dir, f.name), filepath.Join(dataLink, f.name)
		if current, err := os.Readlink(link); err == nil && current == target {
			continue
		}
		if err := replaceWithSymlink(link, target); err != nil {
			return err
		}
	}
	// Nothing reads the previous generation any more, but a reader that resolved "..data"
	// just before the rename: it gets "no such file" and reads again.
	if previous != "" && previous != filepath.Base(gen) && !filepath.IsAbs(previous) {
		_ = os.RemoveAll(filepath.Join(dir, previous))
	}
	return nil
}

// Load reads a certificate directory and checks that the key matches the certificate.
// It returns the CA bundle (ca.crt, or nil when the directory has none). In a directory
// WriteDir wrote, the three files always come from one bundle.
func Load(dir string) (pair tls.Certificate, ca []byte, err error) {
	// Like a seqlock: read, then check that "..data" still points where it did before. A
	// generation's name is never reused, so an unchanged target means nothing moved.
	for range 5 {
		before, _ := os.Readlink(filepath.Join(dir, dataLink))
		pair, ca, err = loadFiles(dir)
		after, _ := os.Readlink(filepath.Join(dir, dataLink))
		if before == after {
			break
		}
	}
	return pair, ca, err
}

func loadFiles(dir string) (tls.Certificate, []byte, error) {
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

func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("certs: writing %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil { // whatever the umask
		f.Close()
		return fmt.Errorf("certs: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}

// replaceWithSymlink points path at target in one rename, whatever path was before (nothing,
// a link, a plain file).
func replaceWithSymlink(path, target string) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp) // left by a write that failed
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
