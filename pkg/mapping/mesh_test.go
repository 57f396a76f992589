package mapping

import (
	"context"
	"errors"
	"testing"
)

// brokenNamespaces fails every lookup, as a client cut off from the API server does.
type brokenNamespaces struct{ err error }

func (b brokenNamespaces) NamespaceLabels(context.Context, string) (map[string]string, bool, error) {
	return nil, false, b.err
}

// TestLookup: labels are matched against the selectors, a missing namespace is unknown, and
// a failed lookup reaches the caller of Decide with a decision that changes nothing.
func TestLookup(t *testing.T) {
	ctx := context.Background()
	cfg := DefaultConfig()
	lookup := cfg.Lookup(ctx, StaticNamespaces{"mesh": {"istio-injection": "enabled"}, "plain": nil})
	for ns, want := range map[string][2]bool{"mesh": {true, true}, "plain": {false, true}, "nowhere": {false, false}} {
		if m, k, err := lookup(ns); err != nil || m != want[0] || k != want[1] {
			t.Errorf("%s: meshed=%v known=%v err=%v, want %v", ns, m, k, err, want)
		}
	}

	cut := errors.New("connection refused")
	obj := mappingObj(apiV2, "mesh", specOf("service", "quote"), nil)
	d, err := Decide(obj, cfg, cfg.Lookup(ctx, brokenNamespaces{cut}))
	if !errors.Is(err, cut) {
		t.Fatalf("error %v, want the lookup's", err)
	}
	if d.Changed() || d.Reason != ReasonNamespaceUnknown {
		t.Errorf("decision on a failed lookup: %+v", d)
	}
	// A Mapping whose tls the webhook set keeps it when the lookup fails.
	owned := mappingObj(apiV2, "mesh", specOf("service", "quote:80", "tls", DefaultTLSContext), ownedBy(DefaultTLSContext))
	if d, err := Decide(owned, cfg, cfg.Lookup(ctx, brokenNamespaces{cut})); err == nil || d.Changed() {
		t.Errorf("own tls on a failed lookup: %+v, %v", d, err)
	}
}
