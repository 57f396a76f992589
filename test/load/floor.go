package main

import (
	"context"
	"crypto/tls"
	"net"
	"os/signal"
	"strconv"
	"syscall"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mutate"
)

// serveFloor is the server floor: what `webhook serve` runs to answer a review (the
// controller-runtime webhook server with its TLS settings, certificate watcher and metrics,
// admission.Webhook decoding the review and encoding the answer, the same logger) with a
// handler that allows without reading the object. It serves both paths, so the generator
// sends it exactly what it sends the webhook.
func serveFloor(addr, certDir string) error {
	ctrl.SetLogger(zap.New()) // serve's default: JSON, info level
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return err
	}
	srv := webhook.NewServer(webhook.Options{
		Host: host, Port: port, CertDir: certDir, CertName: certs.CertFile, KeyName: certs.KeyFile,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }},
	})
	allow := admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Allowed("")
	})
	for _, path := range []string{mutate.DeploymentPath, mutate.MappingPath} {
		srv.Register(path, &admission.Webhook{Handler: allow})
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return srv.Start(ctx)
}
