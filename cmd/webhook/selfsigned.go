package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
	"github.com/emissary-istio/emissary-istio-webhook/certs/selfsigned"
)

// selfSignedOptions are the flags of `serve --self-signed`, the mode for clusters without
// cert-manager (manifests/components/self-signed).
type selfSignedOptions struct {
	enabled           bool
	serviceName       string
	serviceNamespace  string
	dnsNames          []string
	webhookConfigName string
	validity          time.Duration
	maxCAs            int
	resync            time.Duration
}

func (o *selfSignedOptions) bindFlags(f *pflag.FlagSet) {
	namespace := os.Getenv("POD_NAMESPACE")
	if namespace == "" {
		namespace = "emissary-istio-system"
	}
	f.BoolVar(&o.enabled, "self-signed", false, "make a CA and serving certificate in --cert-dir when it holds no valid one, and keep the caBundle of --webhook-config-name trusting that CA (for clusters without cert-manager)")
	f.StringVar(&o.serviceName, "service-name", "emissary-istio-webhook", "with --self-signed: the Service the API server calls the webhook through")
	f.StringVar(&o.serviceNamespace, "service-namespace", namespace, "with --self-signed: the Service's namespace (the default is $POD_NAMESPACE when set)")
	f.StringSliceVar(&o.dnsNames, "dns-names", nil, "with --self-signed: the certificate's DNS names and IP addresses, instead of <service-name>.<service-namespace>.svc[.cluster.local]")
	f.StringVar(&o.webhookConfigName, "webhook-config-name", "emissary-istio-webhook", "with --self-signed: the MutatingWebhookConfiguration whose caBundle to keep")
	f.IntVar(&o.maxCAs, "max-bundle-cas", certs.MaxBundleCAs, "with --self-signed: how many CAs the caBundle keeps; at least twice the replicas a rolling update runs at once (every replica's CA, old and new while it renews)")
	f.DurationVar(&o.validity, "cert-validity", 365*24*time.Hour, "with --self-signed: validity of the CA and serving certificate; a new pair is made when a third of it is left")
	f.DurationVar(&o.resync, "ca-bundle-resync", selfsigned.DefaultResyncPeriod, "with --self-signed: how often the caBundle is re-checked when no change of the webhook configuration was seen")
}

// hosts are the names the API server reaches the webhook by: <service>.<namespace>.svc is
// what it verifies for a service reference.
func (o *selfSignedOptions) hosts() []string {
	if len(o.dnsNames) > 0 {
		return o.dnsNames
	}
	svc := o.serviceName + "." + o.serviceNamespace + ".svc"
	return []string{svc, svc + ".cluster.local"}
}

// keeperOptions are the keeper's options for a server reading certDir.
func (o *selfSignedOptions) keeperOptions(certDir string) (selfsigned.Options, error) {
	if o.validity < time.Second {
		return selfsigned.Options{}, fmt.Errorf("serve: --cert-validity must be at least 1s, got %s", o.validity)
	}
	if o.maxCAs < 2 {
		return selfsigned.Options{}, fmt.Errorf("serve: --max-bundle-cas must be at least 2, got %d", o.maxCAs)
	}
	if o.resync <= 0 {
		return selfsigned.Options{}, fmt.Errorf("serve: --ca-bundle-resync must be positive, got %s", o.resync)
	}
	return selfsigned.Options{CertDir: certDir, Hosts: o.hosts(), Validity: o.validity, WebhookConfigName: o.webhookConfigName, MaxCAs: o.maxCAs, ResyncPeriod: o.resync}, nil
}
