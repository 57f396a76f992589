package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// MaxBundleCAs is how many CAs a caBundle keeps by default (`serve --max-bundle-cas`). In
// --self-signed mode every replica has its own CA, so the bundle must hold every live
// replica's during a rolling update (replicas + maxSurge), old and new while one renews:
// 2 x (replicas + 1). Ten fits up to 4 replicas; the chart raises it with replicaCount.
const MaxBundleCAs = 10

// MergeCABundle returns a caBundle that trusts ca, made from current (a webhook
// configuration's caBundle): when current does not hold ca, ca first, then current's
// certificates (the most recently added first) up to max in all; certificates that are
// expired at now, unreadable or duplicated are dropped either way. The order makes the
// oldest CAs, those of replicas long gone, fall off first, and a live replica that lost its
// place puts itself back in front, so replicas that each run this settle instead of racing.
//
// changed is false when current already trusts ca and has nothing to drop: merged is then
// current itself and there is nothing to write.
func MergeCABundle(current, ca []byte, max int, now time.Time) (merged []byte, changed bool, err error) {
	own, err := firstCertificate(ca)
	if err != nil {
		return nil, false, err
	}
	var kept []*x509.Certificate
	dropped, found := false, false
	rest := current
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		switch {
		case block.Type != "CERTIFICATE" || err != nil, now.After(cert.NotAfter), contains(kept, cert):
			dropped = true
		case cert.Equal(own):
			found = true
			kept = append(kept, cert)
		default:
			kept = append(kept, cert)
		}
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		dropped = true // trailing bytes that are not PEM
	}
	if found && !dropped {
		return current, false, nil
	}
	if !found {
		kept = append([]*x509.Certificate{own}, kept...)
		if len(kept) > max {
			kept = kept[:max]
		}
	}
	var out bytes.Buffer
	for _, c := range kept {
		out.Write(pemBlock("CERTIFICATE", c.Raw))
	}
	return out.Bytes(), true, nil
}

// Trusts reports whether caBundle holds the (first) certificate of ca.
func Trusts(caBundle, ca []byte) bool {
	own, err := firstCertificate(ca)
	if err != nil {
		return false
	}
	for rest := caBundle; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return false
		}
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil && cert.Equal(own) {
			return true
		}
	}
}

func firstCertificate(pemData []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(pemData)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("certs: no PEM certificate in CA")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: CA: %w", err)
	}
	return cert, nil
}

func contains(certs []*x509.Certificate, c *x509.Certificate) bool {
	for _, k := range certs {
		if k.Equal(c) {
			return true
		}
	}
	return false
}
