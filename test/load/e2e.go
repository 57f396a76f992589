package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
)

// E2EResult compares Mapping creates through the API server with the webhook, without it,
// and with the floor server registered in its place.
type E2EResult struct {
	Mappings     int     `json:"mappings"` // per namespace
	WithP50ms    float64 `json:"withP50ms"`
	WithP90ms    float64 `json:"withP90ms"`
	WithoutP50ms float64 `json:"withoutP50ms"`
	WithoutP90ms float64 `json:"withoutP90ms"`
	FloorP50ms   float64 `json:"floorP50ms"`
	FloorP90ms   float64 `json:"floorP90ms"`
	Ratio        float64 `json:"ratio"`      // WithP50ms / WithoutP50ms
	FloorRatio   float64 `json:"floorRatio"` // FloorP50ms / WithoutP50ms: what calling any webhook costs
}

// All three namespaces are meshed. The webhook configuration's namespaceSelector excludes the
// last two (emissary-istio.io/webhook=disabled), so the API server does not call the webhook
// for them; a copy of the same configuration pointed at the floor server selects only the
// last. The same cluster, client and Mapping; creates interleaved one by one.
const (
	nsWith      = "e2e-webhook"
	nsWithout   = "e2e-no-webhook"
	nsFloor     = "e2e-floor"
	floorSelect = "emissary-istio.io/e2e-floor"
)

func e2ePhase(o options, env *envtest.Env, webhookURL, floorURL string, caBundle []byte) (*E2EResult, error) {
	ctx := context.Background()
	mwc, err := envtest.WebhookConfiguration(webhookURL, caBundle)
	if err != nil {
		return nil, err
	}
	if err := env.Client.Create(ctx, mwc); err != nil {
		return nil, fmt.Errorf("registering the webhook: %w", err)
	}
	floorMWC, err := envtest.WebhookConfiguration(floorURL, caBundle)
	if err != nil {
		return nil, err
	}
	floorMWC.Name += "-floor"
	for i := range floorMWC.Webhooks {
		floorMWC.Webhooks[i].Name = "floor-" + floorMWC.Webhooks[i].Name
		floorMWC.Webhooks[i].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{floorSelect: "true"}}
	}
	if err := env.Client.Create(ctx, floorMWC); err != nil {
		return nil, fmt.Errorf("registering the floor: %w", err)
	}
	disabled := map[string]string{"istio-injection": "enabled", "emissary-istio.io/webhook": "disabled"}
	for ns, labels := range map[string]map[string]string{
		nsWith:    {"istio-injection": "enabled"},
		nsWithout: disabled,
		nsFloor:   {"istio-injection": "enabled", "emissary-istio.io/webhook": "disabled", floorSelect: "true"},
	} {
		if err := createNamespace(ctx, env.Client, ns, labels, nil); err != nil {
			return nil, err
		}
	}
	// A client that never waits on client-side rate limits, so that latency is the server's.
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 1e6, 1e6
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, err
	}

	// The API server picks up a webhook configuration, and the webhook's cache a namespace,
	// asynchronously: wait until a create in nsWith comes back defaulted.
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := mapping(nsWith, "probe")
		err := c.Create(ctx, m, client.DryRunAll)
		if err == nil && tlsOf(m) == "istio-upstream" {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the API server does not call the webhook (last error %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	create := func(ns, name string, wantTLS string) (time.Duration, error) {
		m := mapping(ns, name)
		t0 := time.Now()
		err := c.Create(ctx, m)
		d := time.Since(t0)
		if err == nil && tlsOf(m) != wantTLS {
			err = fmt.Errorf("mapping %s/%s stored with tls %q, want %q", ns, name, tlsOf(m), wantTLS)
		}
		return d, err
	}
	const warmup = 20
	var with, without, floor []time.Duration
	for i := range warmup + o.mappings {
		name := fmt.Sprintf("m-%05d", i)
		dw, err := create(nsWith, name, "istio-upstream")
		if err != nil {
			return nil, err
		}
		dn, err := create(nsWithout, name, "")
		if err != nil {
			return nil, err
		}
		df, err := create(nsFloor, name, "")
		if err != nil {
			return nil, err
		}
		if i >= warmup {
			with, without, floor = append(with, dw), append(without, dn), append(floor, df)
		}
	}
	for _, l := range [][]time.Duration{with, without, floor} {
		slices.Sort(l)
	}
	r := &E2EResult{
		Mappings:  o.mappings,
		WithP50ms: ms(percentile(with, 0.5)), WithP90ms: ms(percentile(with, 0.9)),
		WithoutP50ms: ms(percentile(without, 0.5)), WithoutP90ms: ms(percentile(without, 0.9)),
		FloorP50ms: ms(percentile(floor, 0.5)), FloorP90ms: ms(percentile(floor, 0.9)),
	}
	r.Ratio, r.FloorRatio = r.WithP50ms/r.WithoutP50ms, r.FloorP50ms/r.WithoutP50ms
	fmt.Printf("   %d Mapping creates each, p50 (p90): webhook %.2fms (%.2f), none %.2fms (%.2f), floor webhook %.2fms (%.2f); ratio %.3f, floor's %.3f\n",
		o.mappings, r.WithP50ms, r.WithP90ms, r.WithoutP50ms, r.WithoutP90ms, r.FloorP50ms, r.FloorP90ms, r.Ratio, r.FloorRatio)
	return r, nil
}

// mapping is the seed's quote-backend Mapping: a bare service name in a meshed namespace.
func mapping(ns, name string) *unstructured.Unstructured {
	m := &unstructured.Unstructured{Object: map[string]interface{}{
		"metadata": map[string]interface{}{"name": name, "namespace": ns},
		"spec":     map[string]interface{}{"prefix": "/" + name + "/", "service": "quote"},
	}}
	m.SetGroupVersionKind(schema.GroupVersionKind{Group: "getambassador.io", Version: "v2", Kind: "Mapping"})
	return m
}

func tlsOf(m *unstructured.Unstructured) string {
	s, _, _ := unstructured.NestedString(m.Object, "spec", "tls")
	return s
}
