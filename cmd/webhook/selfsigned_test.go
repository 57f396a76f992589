package main

import (
	"slices"
	"testing"

	"github.com/spf13/pflag"
)

// The certificate must name what the API server dials: <service>.<namespace>.svc for the
// webhook configuration's service reference.
func TestSelfSignedHosts(t *testing.T) {
	cases := []struct {
		name         string
		podNamespace string
		args         []string
		want         []string
	}{
		{"defaults", "", nil, []string{
			"emissary-istio-webhook.emissary-istio-system.svc", "emissary-istio-webhook.emissary-istio-system.svc.cluster.local"}},
		{"namespace from the downward API", "webhooks", nil, []string{
			"emissary-istio-webhook.webhooks.svc", "emissary-istio-webhook.webhooks.svc.cluster.local"}},
		{"flags", "webhooks", []string{"--service-name=hook", "--service-namespace=ops"}, []string{
			"hook.ops.svc", "hook.ops.svc.cluster.local"}},
		{"explicit names win", "", []string{"--service-name=hook", "--dns-names=127.0.0.1,localhost"}, []string{
			"127.0.0.1", "localhost"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("POD_NAMESPACE", tc.podNamespace)
			var o selfSignedOptions
			f := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			o.bindFlags(f)
			if err := f.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if got := o.hosts(); !slices.Equal(got, tc.want) {
				t.Errorf("hosts() = %v, want %v", got, tc.want)
			}
		})
	}
}
