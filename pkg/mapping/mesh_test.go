package mapping

import (
	"context"
	"errors"
	"reflect"
	"strings"
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

// TestMeshedLabels: the labels --meshed-namespaces gives a namespace make it meshed under the
// configured selectors, whatever they are; when none can be met, the error says why.
func TestMeshedLabels(t *testing.T) {
	for _, c := range []struct {
		selectors    []string
		want         map[string]string
		negativeOnly bool
		err          string
	}{
		{DefaultMeshedNamespaceSelectors, map[string]string{"istio-injection": "enabled"}, false, ""},
		{[]string{"istio.io/rev,istio-injection!=disabled"}, map[string]string{"istio.io/rev": "enabled"}, false, ""},
		{[]string{"istio.io/rev in (canary, stable)"}, map[string]string{"istio.io/rev": "canary"}, false, ""},
		{[]string{"mesh=on,team notin (legacy)"}, map[string]string{"mesh": "on"}, false, ""},
		{[]string{"tier>2"}, map[string]string{"tier": "3"}, false, ""},
		{[]string{"rev,rev!=enabled,rev!=true"}, map[string]string{"rev": "default"}, false, ""},
		{[]string{"istio-injection!=disabled"}, map[string]string{}, true, ""},
		{[]string{"!legacy"}, map[string]string{}, true, ""},
		{[]string{"a=1,a=2", "b=1"}, map[string]string{"b": "1"}, false, ""},
		{[]string{"a=1,a=2"}, nil, false, `"a=1,a=2": no value of a meets all of its terms`},
		{[]string{"a,!a"}, nil, false, "a must both exist and not exist"},
		{[]string{}, nil, false, "Mapping defaulting is off"},
	} {
		cfg := &Config{MeshedNamespaceSelectors: c.selectors}
		cfg.ApplyDefaults()
		if errs := cfg.Validate(); len(errs) > 0 {
			t.Fatalf("%q: %v", c.selectors, errs)
		}
		got, negativeOnly, err := cfg.MeshedLabels()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want one that says %q", c.selectors, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) || negativeOnly != c.negativeOnly {
			t.Errorf("%q: %v (negative only %v), %v; want %v (%v)", c.selectors, got, negativeOnly, err, c.want, c.negativeOnly)
		}
		if !cfg.Meshed(got) {
			t.Errorf("%q: %v is not meshed", c.selectors, got)
		}
	}
}

// TestRestores: a decision restores what is stored when the stored Mapping already has the
// tls, service and annotation the decision writes.
func TestRestores(t *testing.T) {
	stored := mappingObj(apiV2, "default", specOf("service", "quote:80", "tls", "istio-upstream"), map[string]interface{}{AnnotationDefaulted: "istio-upstream"})
	reapplied := mappingObj(apiV2, "default", specOf("service", "quote", "tls", "istio-upstream"), map[string]interface{}{AnnotationDefaulted: "istio-upstream"})
	d := decideWith(t, reapplied, "istio-upstream", fixedMesh)
	if !d.Default || !d.Restores(stored) {
		t.Errorf("re-apply of the original file: %+v restores %v", d, d.Restores(stored))
	}
	if d.Restores(mappingObj(apiV2, "default", specOf("service", "quote"), nil)) {
		t.Error("a Mapping stored without tls is restored?")
	}
	if d.Restores(nil) {
		t.Error("a CREATE restores?")
	}
	unmeshed := mappingObj(apiV2, "plain", specOf("service", "quote:80", "tls", "istio-upstream"), map[string]interface{}{AnnotationDefaulted: "istio-upstream"})
	revert := decideWith(t, unmeshed, "istio-upstream", fixedMesh)
	if !revert.Revert || revert.Restores(unmeshed) || !revert.Restores(mappingObj(apiV2, "plain", specOf("service", "quote:80"), nil)) {
		t.Errorf("revert: %+v", revert)
	}
}
