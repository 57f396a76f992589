package mapping

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/test/golden"
)

// fixedMesh is the mesh of these tests: default and istio-ns are meshed, plain is not,
// every other namespace does not exist.
func fixedMesh(ns string) (meshed, known bool, err error) {
	switch ns {
	case "default", "istio-ns":
		return true, true, nil
	case "plain":
		return false, true, nil
	}
	return false, false, nil
}

// decideWith is Decide with tlsContext configured and a lookup that cannot fail.
func decideWith(t testing.TB, obj map[string]interface{}, tlsContext string, lookup MeshLookup) Decision {
	t.Helper()
	d, err := Decide(obj, &Config{TLSContext: tlsContext}, lookup)
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	return d
}

// mappingObj builds a Mapping; a nil spec value means "leave the field out".
func mappingObj(apiVersion, namespace string, spec map[string]interface{}, annotations map[string]interface{}) map[string]interface{} {
	meta := map[string]interface{}{"name": "quote-backend"}
	if namespace != "" {
		meta["namespace"] = namespace
	}
	if annotations != nil {
		meta["annotations"] = annotations
	}
	return map[string]interface{}{
		"apiVersion": apiVersion,
		"kind":       "Mapping",
		"metadata":   meta,
		"spec":       spec,
	}
}

// ownedBy is the annotation set the webhook leaves on a Mapping it defaulted to tls, plus kv.
func ownedBy(tls string, kv ...interface{}) map[string]interface{} {
	return specOf(append([]interface{}{AnnotationDefaulted, tls}, kv...)...)
}

func specOf(kv ...interface{}) map[string]interface{} {
	s := map[string]interface{}{"prefix": "/backend/"}
	for i := 0; i+1 < len(kv); i += 2 {
		s[kv[i].(string)] = kv[i+1]
	}
	return s
}

const (
	apiV1       = "getambassador.io/v1"
	apiV2       = "getambassador.io/v2"
	apiV3alpha1 = "getambassador.io/v3alpha1"
)

// deepCopy copies a decoded JSON/YAML value (maps, slices, scalars); other values are shared.
func deepCopy(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		out := make(map[string]interface{}, len(t))
		for k, e := range t {
			out[k] = deepCopy(e)
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, e := range t {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

// apply applies d to obj with its Patch, as the API server applies the webhook's answer,
// and returns the result (obj itself when d changes nothing).
func apply(t testing.TB, obj map[string]interface{}, d Decision) map[string]interface{} {
	t.Helper()
	patch, err := Patch(obj, d)
	if err != nil {
		t.Fatal(err)
	}
	if patch == nil {
		return obj
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("patch %s: %v", patch, err)
	}
	if raw, err = ops.Apply(raw); err != nil {
		t.Fatalf("patch %s does not apply: %v", patch, err)
	}
	out, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDecide(t *testing.T) {
	type tc struct {
		name      string
		obj       map[string]interface{}
		nilLookup bool
		reason    string
		service   string // expected Service ("" = unchanged)
		namespace string // expected Namespace
		warn      string // substring of some warning; "" = no warning expected unless defaulted
		revert    bool   // expected Revert
	}
	skipAnn := map[string]interface{}{AnnotationTLS: "skip"}
	cases := []tc{
		// Defaulted.
		{name: "seed v2 quote in default", obj: mappingObj(apiV2, "default", specOf("service", "quote"), nil),
			reason: "defaulted", service: "quote:80", namespace: "default"},
		{name: "v3alpha1 quote in default", obj: mappingObj(apiV3alpha1, "default", specOf("service", "quote"), nil),
			reason: "defaulted", service: "quote:80", namespace: "default"},
		{name: "apiV1 quote in default", obj: mappingObj(apiV1, "default", specOf("service", "quote"), nil),
			reason: "defaulted", service: "quote:80", namespace: "default"},
		{name: "quote.default from ambassador", obj: mappingObj(apiV2, "ambassador", specOf("service", "quote.default"), nil),
			reason: "defaulted", service: "quote.default:80", namespace: "default"},
		{name: "explicit port kept", obj: mappingObj(apiV2, "ambassador", specOf("service", "quote.istio-ns:8080"), nil),
			reason: "defaulted", namespace: "istio-ns"},
		{name: "svc.cluster.local", obj: mappingObj(apiV3alpha1, "ambassador", specOf("service", "quote.default.svc.cluster.local"), nil),
			reason: "defaulted", service: "quote.default.svc.cluster.local:80", namespace: "default"},
		{name: "path kept after pinned port", obj: mappingObj(apiV2, "default", specOf("service", "quote/foo"), nil),
			reason: "defaulted", service: "quote:80/foo", namespace: "default"},
		{name: "port 0 is pinned", obj: mappingObj(apiV2, "default", specOf("service", "quote:0"), nil),
			reason: "defaulted", service: "quote:80", namespace: "default"},
		{name: "tls null counts as absent", obj: mappingObj(apiV2, "default", specOf("service", "quote", "tls", nil), nil),
			reason: "defaulted", service: "quote:80", namespace: "default"},
		{name: "resolver kubernetes-service", obj: mappingObj(apiV3alpha1, "default", specOf("service", "quote", "resolver", "kubernetes-service"), nil),
			reason: "defaulted", service: "quote:80", namespace: "default"},
		{name: "resolver kubernetes-endpoint", obj: mappingObj(apiV3alpha1, "default", specOf("service", "quote", "resolver", "kubernetes-endpoint"), nil),
			reason: "defaulted", service: "quote:80", namespace: "default"},
		{name: "resolver endpoint", obj: mappingObj(apiV2, "default", specOf("service", "quote", "resolver", "endpoint"), nil),
			reason: "defaulted", service: "quote:80", namespace: "default"},
		{name: "empty resolver is the default one", obj: mappingObj(apiV2, "default", specOf("service", "quote", "resolver", ""), nil),
			reason: "defaulted", service: "quote:80", namespace: "default"},
		{name: "nil metadata, qualified service", obj: map[string]interface{}{"kind": "Mapping", "metadata": nil, "spec": specOf("service", "quote.default")},
			reason: "defaulted", service: "quote.default:80", namespace: "default"},
		{name: "no apiVersion or kind", obj: map[string]interface{}{"spec": specOf("service", "quote.default:80")},
			reason: "defaulted", namespace: "default"},
		{name: "unknown annotation value is ignored with a warning", obj: mappingObj(apiV2, "default", specOf("service", "quote"), map[string]interface{}{AnnotationTLS: "false"}),
			reason: "defaulted", service: "quote:80", namespace: "default", warn: "only \"skip\" opts out"},

		// tls already set.
		{name: "v2 tls true in meshed namespace", obj: mappingObj(apiV2, "default", specOf("service", "quote", "tls", true), nil),
			reason: "tls-set", namespace: "default", warn: "tls is true"},
		{name: "v2 tls false in meshed namespace", obj: mappingObj(apiV2, "default", specOf("service", "quote", "tls", false), nil),
			reason: "tls-set", namespace: "default", warn: "tls is false: Emissary will send plain text, which STRICT mTLS rejects"},
		{name: "v2 tls false, not meshed: no warning", obj: mappingObj(apiV2, "plain", specOf("service", "quote", "tls", false), nil),
			reason: "tls-set", namespace: "plain"},
		{name: "v3alpha1 tls string", obj: mappingObj(apiV3alpha1, "default", specOf("service", "quote:80", "tls", "istio-upstream"), nil),
			reason: "tls-set", namespace: "default"},
		{name: "v3alpha1 other TLSContext", obj: mappingObj(apiV3alpha1, "default", specOf("service", "quote:80", "tls", "my-ctx"), nil),
			reason: "tls-set", namespace: "default"},
		{name: "tls empty string is explicit", obj: mappingObj(apiV2, "default", specOf("service", "quote", "tls", ""), nil),
			reason: "tls-set", namespace: "default", warn: "tls is empty"},
		{name: "tls false with a Consul resolver: no warning", obj: mappingObj(apiV2, "default", specOf("service", "quote", "tls", false, "resolver", "consul"), nil),
			reason: "tls-set", namespace: "default"},
		{name: "tls set and no service", obj: mappingObj(apiV2, "default", specOf("tls", "x"), nil), reason: "tls-set"},
		{name: "tls of another type", obj: mappingObj(apiV2, "default", specOf("service", "quote", "tls", float64(1)), nil),
			reason: "bad-spec", namespace: "default"},

		// tls the webhook set (marked by the annotation) is decided again.
		{name: "own tls, port dropped by a client-side re-apply: pinned again", obj: mappingObj(apiV2, "default", specOf("service", "quote", "tls", "istio-upstream"), ownedBy("istio-upstream")),
			reason: "defaulted", service: "quote:80", namespace: "default"},
		{name: "own tls, pinned: up to date", obj: mappingObj(apiV2, "default", specOf("service", "quote:80", "tls", "istio-upstream"), ownedBy("istio-upstream")),
			reason: "up-to-date", namespace: "default"},
		{name: "own tls, old TLSContext name: re-rendered", obj: mappingObj(apiV2, "default", specOf("service", "quote:80", "tls", "old-context"), ownedBy("old-context")),
			reason: "defaulted", namespace: "default"},
		{name: "own tls, namespace left the mesh: reverted", obj: mappingObj(apiV2, "plain", specOf("service", "quote:80", "tls", "istio-upstream"), ownedBy("istio-upstream")),
			reason: "not-meshed", revert: true, namespace: "plain", warn: "removed spec.tls"},
		{name: "own tls, opted out: reverted", obj: mappingObj(apiV2, "default", specOf("service", "quote:80", "tls", "istio-upstream"), ownedBy("istio-upstream", AnnotationTLS, "skip")),
			reason: "opt-out", revert: true, namespace: "default", warn: "removed spec.tls"},
		{name: "own tls, namespace unknown: kept", obj: mappingObj(apiV2, "ambassador", specOf("service", "quote.nowhere:80", "tls", "istio-upstream"), ownedBy("istio-upstream")),
			reason: "namespace-unknown", namespace: "nowhere"},
		{name: "tls changed by the user after defaulting: theirs", obj: mappingObj(apiV2, "default", specOf("service", "quote:80", "tls", "my-ctx"), ownedBy("istio-upstream")),
			reason: "tls-set", namespace: "default"},

		// Scheme, IP, external.
		{name: "http:// in meshed namespace", obj: mappingObj(apiV2, "default", specOf("service", "http://quote"), nil),
			reason: "scheme", namespace: "default", warn: "uses http://"},
		{name: "https:// in meshed namespace", obj: mappingObj(apiV2, "default", specOf("service", "https://quote.default"), nil),
			reason: "scheme", namespace: "default", warn: "uses https://"},
		{name: "HTTP:// not meshed", obj: mappingObj(apiV2, "plain", specOf("service", "HTTP://quote"), nil),
			reason: "scheme", namespace: "plain"},
		{name: "IPv4", obj: mappingObj(apiV2, "default", specOf("service", "10.0.0.1:8080"), nil), reason: "ip"},
		{name: "IPv6", obj: mappingObj(apiV2, "default", specOf("service", "[fe80::1]"), nil), reason: "ip"},
		{name: "external FQDN", obj: mappingObj(apiV2, "default", specOf("service", "api.example.com"), nil), reason: "external"},
		{name: "localhost", obj: mappingObj(apiV2, "default", specOf("service", "localhost:8500"), nil), reason: "external"},

		// Service problems.
		{name: "no service", obj: mappingObj(apiV2, "default", specOf("rewrite", "/"), nil), reason: "no-service"},
		{name: "host_redirect", obj: mappingObj(apiV2, "default", specOf("service", "quote", "host_redirect", true), nil), reason: "redirect", namespace: "default"},
		{name: "host_redirect false is no redirect", obj: mappingObj(apiV2, "default", specOf("service", "quote", "host_redirect", false), nil),
			reason: "defaulted", service: "quote:80", namespace: "default"},
		{name: "empty service", obj: mappingObj(apiV2, "default", specOf("service", ""), nil), reason: "no-service"},
		{name: "null service", obj: mappingObj(apiV2, "default", specOf("service", nil), nil), reason: "no-service"},
		{name: "service of wrong type", obj: mappingObj(apiV2, "default", specOf("service", float64(80)), nil), reason: "bad-spec"},
		{name: "service a list", obj: mappingObj(apiV2, "default", specOf("service", []interface{}{"quote"}), nil), reason: "bad-spec"},
		{name: "invalid port", obj: mappingObj(apiV2, "default", specOf("service", "quote:99999"), nil),
			reason: "invalid-service", warn: "cannot parse service"},
		{name: "garbage", obj: mappingObj(apiV2, "default", specOf("service", "::::"), nil), reason: "invalid-service", warn: "cannot parse"},

		// Resolvers.
		{name: "consul resolver", obj: mappingObj(apiV2, "default", specOf("service", "quote", "resolver", "consul-dc1"), nil), reason: "resolver"},
		{name: "custom endpoint resolver name", obj: mappingObj(apiV3alpha1, "default", specOf("service", "quote", "resolver", "my-endpoints"), nil), reason: "resolver"},
		{name: "resolver of wrong type", obj: mappingObj(apiV3alpha1, "default", specOf("service", "quote", "resolver", true), nil), reason: "bad-spec", namespace: "default"},

		// Opt-out.
		{name: "annotation skip", obj: mappingObj(apiV2, "default", specOf("service", "quote"), skipAnn), reason: "opt-out", namespace: "default"},
		{name: "annotation SKIP with spaces", obj: mappingObj(apiV2, "default", specOf("service", "quote"), map[string]interface{}{AnnotationTLS: " Skip "}), reason: "opt-out", namespace: "default"},

		// Namespaces.
		{name: "unlabelled namespace", obj: mappingObj(apiV2, "plain", specOf("service", "quote"), nil), reason: "not-meshed", namespace: "plain"},
		{name: "qualified into unlabelled namespace", obj: mappingObj(apiV2, "default", specOf("service", "quote.plain"), nil), reason: "not-meshed", namespace: "plain"},
		{name: "unknown namespace, name.ns.svc: warned", obj: mappingObj(apiV2, "default", specOf("service", "quote.nowhere.svc:80"), nil),
			reason: "namespace-unknown", namespace: "nowhere", warn: "was not found, so tls was not set"},
		{name: "unknown namespace, name.ns may be a domain: not warned", obj: mappingObj(apiV2, "default", specOf("service", "quote.nowhere"), nil),
			reason: "namespace-unknown", namespace: "nowhere"},
		{name: "bare name, Mapping namespace unknown", obj: mappingObj(apiV2, "", specOf("service", "quote"), nil),
			reason: "namespace-unknown", warn: "namespace is unknown"},
		{name: "nil metadata, bare name", obj: map[string]interface{}{"kind": "Mapping", "spec": specOf("service", "quote")},
			reason: "namespace-unknown", warn: "namespace is unknown"},
		{name: "nil lookup", obj: mappingObj(apiV2, "default", specOf("service", "quote"), nil), nilLookup: true,
			reason: "namespace-unknown", namespace: "default", warn: "was not found, so tls was not set"},

		// Malformed objects.
		{name: "nil object", obj: nil, reason: "bad-spec"},
		{name: "spec not a map", obj: map[string]interface{}{"kind": "Mapping", "spec": "quote"}, reason: "bad-spec"},
		{name: "spec missing", obj: map[string]interface{}{"kind": "Mapping"}, reason: "bad-spec"},
		{name: "spec null", obj: map[string]interface{}{"kind": "Mapping", "spec": nil}, reason: "bad-spec"},
		{name: "metadata not a map", obj: map[string]interface{}{"metadata": "x", "spec": specOf("service", "quote.default")}, reason: "bad-spec"},
		{name: "namespace not a string", obj: map[string]interface{}{"metadata": map[string]interface{}{"namespace": 3.0}, "spec": specOf("service", "quote")}, reason: "bad-spec"},
		{name: "annotations not a map", obj: map[string]interface{}{"metadata": map[string]interface{}{"annotations": "x"}, "spec": specOf("service", "quote.default")}, reason: "bad-spec"},
		{name: "another kind", obj: map[string]interface{}{"kind": "TCPMapping", "spec": specOf("service", "quote.default")}, reason: "bad-spec"},
		{name: "kind not a string", obj: map[string]interface{}{"kind": map[string]interface{}{}, "spec": specOf("service", "quote.default")}, reason: "bad-spec"},
	}

	seen := map[string]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var lookup MeshLookup = fixedMesh
			if c.nilLookup {
				lookup = nil
			}
			before := deepCopy(c.obj)
			d := decideWith(t, c.obj, "istio-upstream", lookup)
			seen[d.Reason] = true
			if !reflect.DeepEqual(before, deepCopy(c.obj)) && c.obj != nil {
				t.Fatalf("Decide mutated its input")
			}
			if d.Reason != c.reason {
				t.Fatalf("reason %q (%s), want %q", d.Reason, d.Message, c.reason)
			}
			if d.Default != (c.reason == "defaulted") {
				t.Fatalf("Default %v with reason %q", d.Default, d.Reason)
			}
			if d.Revert != c.revert {
				t.Fatalf("Revert %v, want %v (%s)", d.Revert, c.revert, d.Message)
			}
			if d.Revert {
				d2 := decideWith(t, apply(t, c.obj, d), "istio-upstream", lookup)
				if d2.Changed() || d2.Reason != c.reason {
					t.Fatalf("after the revert: %+v", d2)
				}
			}
			if d.Service != c.service {
				t.Fatalf("Service %q, want %q", d.Service, c.service)
			}
			if d.Namespace != c.namespace {
				t.Fatalf("Namespace %q, want %q", d.Namespace, c.namespace)
			}
			if d.Message == "" || strings.Contains(d.Message, "\n") {
				t.Fatalf("Message %q: want one line", d.Message)
			}
			checkWarnings(t, d)
			if c.warn != "" && !anyContains(append(d.Warnings, d.Notice), c.warn) {
				t.Fatalf("warnings %q: none contains %q", d.Warnings, c.warn)
			}
			if c.warn == "" && !d.Changed() && len(d.Warnings) > 0 {
				t.Fatalf("unexpected warnings %q", d.Warnings)
			}
			if d.Default && d.TLS != "istio-upstream" {
				t.Fatalf("TLS %q", d.TLS)
			}
			// Idempotency: what the webhook stores is left alone next time.
			if d.Default {
				after := apply(t, c.obj, d)
				d2 := decideWith(t, after, "istio-upstream", lookup)
				if d2.Changed() || d2.Reason != ReasonUpToDate || d2.Service != "" {
					t.Fatalf("second decision %+v, want up-to-date", d2)
				}
				for _, w := range d2.Warnings { // only a stray annotation keeps warning
					if !strings.Contains(w, "annotation "+AnnotationTLS) {
						t.Fatalf("second decision warns %q", w)
					}
				}
			}
		})
	}
	for _, r := range Reasons {
		if !seen[r] {
			t.Errorf("no case has reason %q", r)
		}
	}
	for r := range seen {
		if !slices.Contains(Reasons, r) {
			t.Errorf("reason %q is not in Reasons", r)
		}
	}
}

func TestDecideMessages(t *testing.T) {
	d := decideWith(t, mappingObj(apiV2, "default", specOf("service", "quote"), nil), "istio-upstream", fixedMesh)
	want := "set tls: istio-upstream and pinned service quote -> quote:80 because namespace default is meshed"
	if d.Message != want {
		t.Errorf("Message %q\nwant    %q", d.Message, want)
	}
	if d, err := Decide(mappingObj(apiV2, "default", specOf("service", "quote"), nil), nil, fixedMesh); err != nil || !d.Default || d.TLS != DefaultTLSContext {
		t.Errorf("no configuration: %+v, %v", d, err)
	}
	d = decideWith(t, mappingObj(apiV2, "default", specOf("service", "quote"), nil), "mesh-mtls", fixedMesh)
	if d.TLS != "mesh-mtls" || !strings.Contains(d.Message, "mesh-mtls") {
		t.Errorf("configured tlsContext: %+v", d)
	}
	// The configured context, already set, is tls-set without warnings; the same Mapping is
	// stable under a second configured name too (the user's/earlier value is kept).
	obj := mappingObj(apiV2, "default", specOf("service", "quote:80", "tls", "istio-upstream"), nil)
	if d := decideWith(t, obj, "mesh-mtls", fixedMesh); d.Default || d.Reason != "tls-set" {
		t.Errorf("%+v", d)
	}
	// A very long service still yields bounded warnings.
	long := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + ".svc/" + strings.Repeat("p", 500)
	d = decideWith(t, mappingObj(apiV2, "default", specOf("service", long), nil), strings.Repeat("c", 300), func(string) (bool, bool, error) { return true, true, nil })
	if !d.Default {
		t.Fatalf("%+v", d)
	}
	checkWarnings(t, d)
}

func checkWarnings(t *testing.T, d Decision) {
	t.Helper()
	if d.Changed() != (d.Notice != "") {
		t.Fatalf("a notice %q with Changed() = %v: %+v", d.Notice, d.Changed(), d)
	}
	for _, w := range append(d.Warnings, d.Notice) {
		if w == "" {
			continue
		}
		if len(w) > maxWarningLen || strings.ContainsAny(w, "\r\n") || !strings.HasPrefix(w, warningPrefix) {
			t.Fatalf("bad warning (%d bytes): %q", len(w), w)
		}
	}
}

func anyContains(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// goldenFile is what a golden file holds: the decision and the Mapping after applying it.
type goldenFile struct {
	Decision struct {
		Default   bool     `json:"default"`
		Service   string   `json:"service,omitempty"`
		Reason    string   `json:"reason"`
		Namespace string   `json:"namespace,omitempty"`
		Message   string   `json:"message"`
		Notice    string   `json:"notice,omitempty"`
		Warnings  []string `json:"warnings,omitempty"`
		// Unprotected: audit lists it.
		Unprotected bool `json:"unprotected,omitempty"`
	} `json:"decision"`
	Mapping map[string]interface{} `json:"mapping"`
}

// TestGolden: testdata/NAME.yaml → NAME.golden.yaml (make golden rewrites them).
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, in := range inputs {
		if !strings.HasSuffix(in, ".golden.yaml") {
			names = append(names, in)
		}
	}
	sort.Strings(names)
	if len(names) < 6 {
		t.Fatalf("only %d golden inputs", len(names))
	}
	for _, in := range names {
		t.Run(filepath.Base(in), func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var obj map[string]interface{}
			if err := yaml.Unmarshal(raw, &obj); err != nil {
				t.Fatal(err)
			}
			d := decideWith(t, obj, "istio-upstream", fixedMesh)
			after := apply(t, obj, d)
			if d2 := decideWith(t, after, "istio-upstream", fixedMesh); d2.Default {
				t.Fatalf("not idempotent: %+v", d2)
			}
			var g goldenFile
			g.Decision.Default, g.Decision.Service, g.Decision.Reason = d.Default, d.Service, d.Reason
			g.Decision.Namespace, g.Decision.Message, g.Decision.Warnings = d.Namespace, d.Message, d.Warnings
			g.Decision.Notice, g.Decision.Unprotected = d.Notice, d.Unprotected
			g.Mapping = after
			got, err := yaml.Marshal(g)
			if err != nil {
				t.Fatal(err)
			}
			golden.Assert(t, strings.TrimSuffix(in, ".yaml")+".golden.yaml", got)
		})
	}
}

// FuzzDecide builds a Mapping from fuzzed strings: never panics, never mutates its
// input, bounded warnings, and deciding again after applying the decision changes nothing.
func FuzzDecide(f *testing.F) {
	f.Add("quote", "", uint8(0), "", "default", "", "getambassador.io/v2")
	f.Add("quote.istio-ns:8080", "istio-upstream", uint8(2), "kubernetes-endpoint", "ambassador", "", "getambassador.io/v3alpha1")
	f.Add("http://quote", "", uint8(1), "consul", "default", "skip", "getambassador.io/v2")
	f.Add("quote/foo?x", "", uint8(3), "", "plain", "nope", "getambassador.io/v1")
	f.Add("[::1]:80", "x", uint8(4), "endpoint", "", "", "")
	f.Add("api.example.com", "", uint8(5), "kubernetes-service", "default", "", "getambassador.io/v2")
	f.Add("quote:0", "", uint8(6), "", "istio-ns", "", "getambassador.io/v2")
	f.Fuzz(func(t *testing.T, service, tls string, shape uint8, resolver, ns, ann, apiVersion string) {
		spec := map[string]interface{}{"prefix": "/"}
		switch shape % 8 {
		case 0: // no tls
			spec["service"] = service
		case 1:
			spec["service"] = service
			spec["tls"] = tls
		case 2:
			spec["service"] = service
			spec["tls"] = tls != ""
		case 3:
			spec["service"] = service
			spec["tls"] = nil
		case 4:
			spec["service"] = float64(len(service))
		case 5:
			spec["service"] = service
			spec["tls"] = map[string]interface{}{"x": tls}
		case 6:
			spec["service"] = service
			spec["resolver"] = []interface{}{resolver}
		case 7: // no service
		}
		if resolver != "" && shape%8 != 6 {
			spec["resolver"] = resolver
		}
		var annotations map[string]interface{}
		if ann != "" {
			annotations = map[string]interface{}{AnnotationTLS: ann}
		}
		obj := mappingObj(apiVersion, ns, spec, annotations)
		before := deepCopy(obj)
		meshedAll := func(n string) (bool, bool, error) { return n != "", n != "nowhere", nil }
		d := decideWith(t, obj, "istio-upstream", meshedAll)
		if !reflect.DeepEqual(before, obj) {
			t.Fatalf("input mutated")
		}
		if !slices.Contains(Reasons, d.Reason) || d.Message == "" {
			t.Fatalf("decision %+v", d)
		}
		checkWarnings(t, d)
		after := apply(t, obj, d)
		d2 := decideWith(t, after, "istio-upstream", meshedAll)
		if d2.Changed() || d2.Service != "" {
			t.Fatalf("not idempotent: %+v then %+v", d, d2)
		}
		if d.Default && d2.Reason != ReasonUpToDate {
			t.Fatalf("after defaulting: %+v", d2)
		}
		if !d.Default && !reflect.DeepEqual(d, d2) {
			t.Fatalf("unchanged Mapping decided differently: %+v then %+v", d, d2)
		}
		if d.Default {
			svc := spec["service"].(string)
			if d.Service != "" {
				svc = d.Service
			}
			p, err := ParseService(svc, ns)
			if err != nil || !p.HasPort() || p.Scheme != "" || !p.InCluster {
				t.Fatalf("defaulted service %q: %+v %v", svc, p, err)
			}
		}
	})
}
