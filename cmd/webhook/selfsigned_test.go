package main

import (
	"slices"
	"testing"

	"github.com/spf13/pflag"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
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

// --max-bundle-cas reaches the keeper (the chart sets it from replicaCount); fewer than 2
// (a renewal trusts the old CA and the new) is refused.
func TestSelfSignedMaxBundleCAs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
		err  bool
	}{
		{nil, certs.MaxBundleCAs, false},
		{[]string{"--max-bundle-cas=24"}, 24, false},
		{[]string{"--max-bundle-cas=1"}, 0, true},
	} {
		var o selfSignedOptions
		f := pflag.NewFlagSet("serve", pflag.ContinueOnError)
		o.bindFlags(f)
		if err := f.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		got, err := o.keeperOptions(t.TempDir())
		if (err != nil) != tc.err || got.MaxCAs != tc.want {
			t.Errorf("%v: MaxCAs %d, error %v; want %d, error %v", tc.args, got.MaxCAs, err, tc.want, tc.err)
		}
	}
}
