package mapping

import (
	"reflect"
	"testing"
)

func TestWithLostMarker(t *testing.T) {
	mapping := func(tls string, annotations map[string]interface{}) map[string]interface{} {
		spec := map[string]interface{}{"service": "quote", "prefix": "/quote/"}
		if tls != "" {
			spec["tls"] = tls
		}
		meta := map[string]interface{}{"name": "quote", "namespace": "default"}
		if annotations != nil {
			meta["annotations"] = annotations
		}
		return map[string]interface{}{"kind": "Mapping", "metadata": meta, "spec": spec}
	}
	marked := map[string]interface{}{AnnotationDefaulted: "istio-upstream"}
	cases := []struct {
		name        string
		obj, stored map[string]interface{}
		restored    bool
	}{
		// Flux's first server-side apply over kubectl's: the annotations map is gone, tls stays.
		{"marker lost, tls kept", mapping("istio-upstream", nil), mapping("istio-upstream", marked), true},
		{"marker lost among other annotations", mapping("istio-upstream", map[string]interface{}{"a": "b"}), mapping("istio-upstream", marked), true},
		{"create", mapping("istio-upstream", nil), nil, false},
		{"marker kept", mapping("istio-upstream", marked), mapping("istio-upstream", marked), false},
		{"tls changed by the user", mapping("other", nil), mapping("istio-upstream", marked), false},
		{"tls removed", mapping("", nil), mapping("istio-upstream", marked), false},
		{"stored tls was the user's", mapping("istio-upstream", nil), mapping("istio-upstream", nil), false},
		{"stored marker records another tls", mapping("mine", nil), mapping("mine", marked), false},
		{"bad metadata", map[string]interface{}{"metadata": "x", "spec": map[string]interface{}{"tls": "istio-upstream"}}, mapping("istio-upstream", marked), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := deepCopy(c.obj)
			got := WithLostMarker(c.obj, c.stored)
			if !reflect.DeepEqual(interface{}(c.obj), before) {
				t.Fatalf("WithLostMarker changed its input: %v", c.obj)
			}
			restored := !reflect.DeepEqual(got, c.obj)
			if _, marker, _ := tlsAndMarker(got); restored != c.restored || (restored && marker != "istio-upstream") {
				t.Errorf("restored = %v (%v), want %v", restored, got, c.restored)
			}
			if c.restored {
				d := decide(got, "istio-upstream", func(string) (bool, bool) { return true, true })
				if !d.Default || d.Service != "quote:80" {
					t.Errorf("decided on the restored object: %+v, want the port pinned again", d)
				}
			}
		})
	}
}
