package mutate

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mapping"
)

// review builds the admission request the API server would send for the YAML in file (or
// inline YAML when file has a newline).
func review(t *testing.T, op admissionv1.Operation, kind metav1.GroupVersionKind, file string) admission.Request {
	t.Helper()
	src := []byte(file)
	if !strings.Contains(file, "\n") {
		var err error
		if src, err = os.ReadFile(file); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := yaml.YAMLToJSON(src)
	if err != nil {
		t.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "test-uid", Operation: op, Kind: kind, Namespace: "default",
		Object: runtime.RawExtension{Raw: raw},
	}}
}

var (
	deploymentGVK = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	mappingV2GVK  = metav1.GroupVersionKind{Group: "getambassador.io", Version: "v2", Kind: "Mapping"}
)

// admit runs a handler the way the server does (admission.Webhook completes the response:
// patch bytes, patch type, UID) and returns the response and the patched object.
func admit(t *testing.T, h admission.Handler, req admission.Request) (admission.Response, []byte) {
	t.Helper()
	resp := (&admission.Webhook{Handler: h}).Handle(context.Background(), req)
	if resp.UID != req.UID {
		t.Fatalf("response UID %q, want %q", resp.UID, req.UID)
	}
	if len(resp.Patch) == 0 {
		if resp.PatchType != nil {
			t.Fatalf("patch type %v without a patch", *resp.PatchType)
		}
		return resp, req.Object.Raw
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("undecodable patch %s: %v", resp.Patch, err)
	}
	out, err := patch.Apply(req.Object.Raw)
	if err != nil {
		t.Fatalf("patch %s does not apply: %v", resp.Patch, err)
	}
	return resp, out
}

// sameJSON compares two JSON documents (or a JSON document and a YAML one) by meaning.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y interface{}
	if err := yaml.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	xs, _ := json.Marshal(x)
	ys, _ := json.Marshal(y)
	return string(xs) == string(ys)
}

// sameDeployment compares two Deployments (JSON or YAML) as typed objects, so that what
// typed encoding adds (status: {}, resources: {}) does not count.
func sameDeployment(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y appsv1.Deployment
	if err := yaml.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return equality.Semantic.DeepEqual(x, y)
}

// TestDeploymentHandler: the patch the handler answers with turns the request into exactly
// the golden output of pkg/inject (one code path), and the patched object admitted again
// gets no patch.
func TestDeploymentHandler(t *testing.T) {
	testdata := filepath.Join("..", "inject", "testdata")
	cases := []struct {
		input       string
		wantPatch   bool
		wantWarning string // substring of some warning
		reason      string
	}{
		{"seed-without-proxy", true, "injected istio-proxy", inject.ReasonInjected},
		{"emissary-3x", true, "injected istio-proxy", inject.ReasonInjected},
		{"helm-4x", true, "injected istio-proxy", inject.ReasonInjected},
		{"already-injected-old-version", true, "updated istio-proxy", inject.ReasonInjected},
		{"opt-out-after-injection", true, "removed istio-proxy", inject.ReasonOptOut},
		{"seed-hand-written", false, "hand-written integration", inject.ReasonHandWrittenSidecar},
		{"non-emissary", false, "", inject.ReasonNotEmissary},
		{"opt-out", false, "", inject.ReasonOptOut},
	}
	for _, c := range cases {
		t.Run(c.input, func(t *testing.T) {
			metrics := NewMetrics(nil)
			h := &DeploymentHandler{Config: NewConfigHolder(inject.DefaultConfig()), Metrics: metrics}
			req := review(t, admissionv1.Create, deploymentGVK, filepath.Join(testdata, c.input+".yaml"))
			resp, out := admit(t, h, req)
			if !resp.Allowed {
				t.Fatalf("denied: %+v", resp.Result)
			}
			if got := len(resp.Patch) > 0; got != c.wantPatch {
				t.Fatalf("patch = %s, want a patch: %v", resp.Patch, c.wantPatch)
			}
			golden, err := os.ReadFile(filepath.Join(testdata, c.input+".golden.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if !sameDeployment(t, out, golden) {
				t.Errorf("patched object differs from %s.golden.yaml:\n%s", c.input, out)
			}
			if c.wantWarning != "" && !strings.Contains(strings.Join(resp.Warnings, "\n"), c.wantWarning) {
				t.Errorf("warnings %q do not mention %q", resp.Warnings, c.wantWarning)
			}
			action := map[bool]string{true: actionMutated, false: actionSkipped}[c.wantPatch]
			if n := testutil.ToFloat64(metrics.admissions.WithLabelValues(kindDeployment, action, c.reason)); n != 1 {
				t.Errorf("admissions{%s,%s,%s} = %v, want 1", kindDeployment, action, c.reason, n)
			}

			// The stored object, admitted again (an UPDATE that re-applies it): no patch.
			again := req
			again.Operation, again.Object.Raw = admissionv1.Update, out
			if resp2, _ := admit(t, h, again); len(resp2.Patch) != 0 {
				t.Errorf("second admission patched again: %s", resp2.Patch)
			}
		})
	}
}

// TestMappingHandler: the handler's patch does what mapping.Decide decided, on objects with
// and without annotations, and is stable when admitted again.
func TestMappingHandler(t *testing.T) {
	namespaces := mapping.StaticNamespaces{
		"default": {"istio-injection": "enabled"},
		"plain":   {},
	}
	mapping := func(ns, annotations, spec string) string {
		return "apiVersion: getambassador.io/v2\nkind: Mapping\nmetadata:\n  name: m\n  namespace: " + ns + "\n" +
			annotations + "spec:\n  prefix: /m/\n" + spec
	}
	const owned = "  annotations:\n    emissary-istio.io/defaulted-tls: istio-upstream\n"
	cases := []struct {
		name, in, want string
	}{
		{"seed: defaulted and pinned",
			mapping("default", "", "  service: quote\n"),
			mapping("default", owned, "  service: quote:80\n  tls: istio-upstream\n")},
		{"other annotations are kept",
			mapping("default", "  annotations:\n    team: edge\n", "  service: quote.default:8080\n"),
			mapping("default", "  annotations:\n    team: edge\n    emissary-istio.io/defaulted-tls: istio-upstream\n", "  service: quote.default:8080\n  tls: istio-upstream\n")},
		{"client-side re-apply dropped the port: pinned again",
			mapping("default", owned, "  service: quote\n  tls: istio-upstream\n"),
			mapping("default", owned, "  service: quote:80\n  tls: istio-upstream\n")},
		{"upstream left the mesh: the webhook's tls is removed",
			mapping("plain", owned, "  service: quote:80\n  tls: istio-upstream\n"),
			mapping("plain", "  annotations: {}\n", "  service: quote:80\n")},
		{"not meshed: unchanged",
			mapping("plain", "", "  service: quote\n"),
			mapping("plain", "", "  service: quote\n")},
		{"user's tls: unchanged",
			mapping("default", "", "  service: quote\n  tls: false\n"),
			mapping("default", "", "  service: quote\n  tls: false\n")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &MappingHandler{Config: NewConfigHolder(inject.DefaultConfig()), Namespaces: namespaces, Metrics: NewMetrics(nil)}
			req := review(t, admissionv1.Create, mappingV2GVK, c.in)
			resp, out := admit(t, h, req)
			if !resp.Allowed {
				t.Fatalf("denied: %+v", resp.Result)
			}
			if !sameJSON(t, out, []byte(c.want)) {
				t.Fatalf("got\n%s\nwant\n%s", out, c.want)
			}
			if len(resp.Patch) > 0 && len(resp.Warnings) == 0 {
				t.Error("a mutation without a warning")
			}
			again := req
			again.Operation, again.Object.Raw = admissionv1.Update, out
			if resp2, _ := admit(t, h, again); len(resp2.Patch) != 0 {
				t.Errorf("second admission patched again: %s", resp2.Patch)
			}
		})
	}
}

// TestHandlersPassThrough: what the handlers do not act on is allowed unchanged with a
// message, and an undecodable object is a clear 400, never a 5xx.
func TestHandlersPassThrough(t *testing.T) {
	cfg := NewConfigHolder(inject.DefaultConfig())
	handlers := map[string]admission.Handler{
		"deployment": &DeploymentHandler{Config: cfg, Metrics: NewMetrics(nil)},
		"mapping":    &MappingHandler{Config: cfg, Namespaces: mapping.StaticNamespaces{}, Metrics: NewMetrics(nil)},
	}
	kinds := map[string]metav1.GroupVersionKind{"deployment": deploymentGVK, "mapping": mappingV2GVK}
	cases := []struct {
		name    string
		op      admissionv1.Operation
		kind    *metav1.GroupVersionKind
		raw     string
		allowed bool
		code    int32
		message string
	}{
		{"delete", admissionv1.Delete, nil, `{}`, true, 200, "operation DELETE is not mutated"},
		{"connect", admissionv1.Connect, nil, `{}`, true, 200, "operation CONNECT is not mutated"},
		{"wrong kind", admissionv1.Create, &metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, `{}`, true, 200, "this webhook handles"},
		{"no object", admissionv1.Create, nil, ``, false, 400, "request.object is empty"},
		{"not JSON", admissionv1.Create, nil, `{"spec": [`, false, 400, "request.object is not a valid"},
		{"spec of the wrong type", admissionv1.Create, nil, `{"spec": "x"}`, false, 400, "request.object is not a valid"},
	}
	for hname, h := range handlers {
		for _, c := range cases {
			if hname == "mapping" && c.name == "spec of the wrong type" {
				continue // a Mapping is read as unstructured: mapping.Decide skips it (bad-spec)
			}
			t.Run(hname+"/"+c.name, func(t *testing.T) {
				kind := kinds[hname]
				if c.kind != nil {
					kind = *c.kind
				}
				req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
					UID: "u", Operation: c.op, Kind: kind, Object: runtime.RawExtension{Raw: []byte(c.raw)},
				}}
				resp := (&admission.Webhook{Handler: h}).Handle(context.Background(), req)
				if resp.Allowed != c.allowed || resp.Result.Code != c.code || !strings.Contains(resp.Result.Message, c.message) {
					t.Fatalf("allowed=%v code=%d message=%q; want allowed=%v code=%d message containing %q",
						resp.Allowed, resp.Result.Code, resp.Result.Message, c.allowed, c.code, c.message)
				}
				if len(resp.Patch) != 0 {
					t.Fatalf("patch %s", resp.Patch)
				}
			})
		}
	}
}
