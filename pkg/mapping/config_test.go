package mapping

import (
	"strings"
	"testing"
)

// TestDefaultSelectors: by default a namespace is meshed as Istio's injector sees it.
func TestDefaultSelectors(t *testing.T) {
	c := DefaultConfig()
	for _, tc := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{"istio-injection": "enabled"}, true},
		{map[string]string{"istio.io/rev": "1-28"}, true},
		{map[string]string{"istio.io/rev": "1-28", "istio-injection": "disabled"}, false},
		{map[string]string{"istio-injection": "disabled"}, false},
		{map[string]string{}, false},
		{nil, false},
	} {
		if got := c.Meshed(tc.labels); got != tc.want {
			t.Errorf("%v: meshed = %v, want %v", tc.labels, got, tc.want)
		}
	}
	if c.TLSContext != DefaultTLSContext {
		t.Errorf("TLSContext %q", c.TLSContext)
	}
}

// TestConfigValidate: every problem is reported, each naming its key in the section; an
// explicit empty selector list means no namespace is meshed.
func TestConfigValidate(t *testing.T) {
	c := &Config{TLSContext: "Istio_Upstream", MeshedNamespaceSelectors: []string{"a=b", "istio.io/rev in (", " "}}
	var msgs []string
	for _, err := range c.Validate() {
		msgs = append(msgs, err.Error())
	}
	got := strings.Join(msgs, "\n")
	for _, want := range []string{"tlsContext: ", "meshedNamespaceSelectors[1]: invalid label selector", "meshedNamespaceSelectors[2]: must not be empty"} {
		if !strings.Contains(got, want) {
			t.Errorf("errors %q do not contain %q", got, want)
		}
	}
	if len(msgs) != 3 {
		t.Errorf("%d errors, want 3: %q", len(msgs), got)
	}

	off := &Config{MeshedNamespaceSelectors: []string{}}
	off.ApplyDefaults()
	if errs := off.Validate(); len(errs) != 0 || off.Meshed(map[string]string{"istio-injection": "enabled"}) {
		t.Errorf("an explicit empty list: %v, meshed %v", errs, off.Meshed(map[string]string{"istio-injection": "enabled"}))
	}
}
