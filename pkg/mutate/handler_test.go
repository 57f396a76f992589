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
	daemonSetGVK  = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "DaemonSet"}
	podGVK        = metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
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

// sameWorkload compares two workloads of kind (JSON or YAML) as typed objects, so that what
// typed encoding adds (status: {}, resources: {}) does not count.
func sameWorkload(t *testing.T, kind string, a, b []byte) bool {
	t.Helper()
	x, err := yaml.YAMLToJSON(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.YAMLToJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	wx, err := inject.DecodeWorkload(kind, x)
	if err != nil {
		t.Fatal(err)
	}
	wy, err := inject.DecodeWorkload(kind, y)
	if err != nil {
		t.Fatal(err)
	}
	return equality.Semantic.DeepEqual(wx, wy)
}

// TestWorkloadHandler: the patch the handler answers with turns the request into exactly
// the golden output of pkg/inject (one code path), for every kind, and the patched object
// admitted again gets no patch.
func TestWorkloadHandler(t *testing.T) {
	testdata := filepath.Join("..", "inject", "testdata")
	cases := []struct {
		input       string
		gvk         metav1.GroupVersionKind
		wantPatch   bool
		wantWarning string // substring of some warning
		reason      string
	}{
		{"seed-without-proxy", deploymentGVK, true, "injected istio-proxy", inject.ReasonInjected},
		{"emissary-3x", deploymentGVK, true, "injected istio-proxy", inject.ReasonInjected},
		{"helm-4x", deploymentGVK, true, "injected istio-proxy", inject.ReasonInjected},
		{"already-injected-old-version", deploymentGVK, true, "updated istio-proxy", inject.ReasonInjected},
		{"opt-out-after-injection", deploymentGVK, true, "removed istio-proxy", inject.ReasonOptOut},
		{"seed-hand-written", deploymentGVK, false, "hand-written integration", inject.ReasonHandWrittenSidecar},
		{"non-emissary", deploymentGVK, false, "", inject.ReasonNotEmissary},
		{"opt-out", deploymentGVK, false, "", inject.ReasonOptOut},
		{"apiext-3x", deploymentGVK, false, "", string(inject.RoleAPIExt)},
		{"chart-daemonset", daemonSetGVK, true, "injected istio-proxy", inject.ReasonInjected},
		{"chart-host-network", daemonSetGVK, false, "hostNetwork", inject.ReasonHostNetwork},
		{"chart-bare-pod", podGVK, true, "injected istio-proxy", inject.ReasonInjected},
		{"replicaset-pod", podGVK, false, "", inject.ReasonOwnedPod},
	}
	for _, c := range cases {
		t.Run(c.input, func(t *testing.T) {
			metrics := NewMetrics(nil)
			h := &WorkloadHandler{Config: NewConfigHolder(inject.DefaultConfig()), Metrics: metrics}
			req := review(t, admissionv1.Create, c.gvk, filepath.Join(testdata, c.input+".yaml"))
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
			if !sameWorkload(t, c.gvk.Kind, out, golden) {
				t.Errorf("patched object differs from %s.golden.yaml:\n%s", c.input, out)
			}
			if c.wantWarning != "" && !strings.Contains(strings.Join(resp.Warnings, "\n"), c.wantWarning) {
				t.Errorf("warnings %q do not mention %q", resp.Warnings, c.wantWarning)
			}
			action := map[bool]string{true: actionMutated, false: actionSkipped}[c.wantPatch]
			if n := testutil.ToFloat64(metrics.admissions.WithLabelValues(c.gvk.Kind, action, c.reason)); n != 1 {
				t.Errorf("admissions{%s,%s,%s} = %v, want 1", c.gvk.Kind, action, c.reason, n)
			}

			// The stored object, admitted again (an UPDATE that re-applies it): no patch.
			again := req
			again.Operation, again.Object.Raw, again.OldObject.Raw = admissionv1.Update, out, out
			if resp2, _ := admit(t, h, again); len(resp2.Patch) != 0 {
				t.Errorf("second admission patched again: %s", resp2.Patch)
			}
		})
	}
}

// TestReapplyIsSilent: an UPDATE whose patch only puts back what is stored (a server-side
// apply of the original file drops the fields the webhook added; a client-side one resets
// the pinned service) is answered with that patch and no warning, and counted as unchanged;
// one that changes what is stored says so.
func TestReapplyIsSilent(t *testing.T) {
	testdata := filepath.Join("..", "inject", "testdata")
	metrics := NewMetrics(nil)
	cfg := NewConfigHolder(inject.DefaultConfig())
	workloads := &WorkloadHandler{Config: cfg, Metrics: metrics}
	mappings := &MappingHandler{Config: cfg, Metrics: metrics, Namespaces: mapping.StaticNamespaces{"default": {"istio-injection": "enabled"}}}
	raw := func(file string) []byte {
		return review(t, admissionv1.Create, deploymentGVK, file).Object.Raw
	}
	update := func(gvk metav1.GroupVersionKind, object, old []byte) admission.Request {
		req := review(t, admissionv1.Update, gvk, string(object)+"\n")
		req.OldObject.Raw = old
		return req
	}
	const (
		mappingIn     = "apiVersion: getambassador.io/v2\nkind: Mapping\nmetadata:\n  name: m\n  namespace: default\n  annotations:\n    emissary-istio.io/defaulted-tls: istio-upstream\nspec:\n  service: quote\n  tls: istio-upstream\n"
		mappingStored = "apiVersion: getambassador.io/v2\nkind: Mapping\nmetadata:\n  name: m\n  namespace: default\n  annotations:\n    emissary-istio.io/defaulted-tls: istio-upstream\nspec:\n  service: quote:80\n  tls: istio-upstream\n"
		mappingOld    = "apiVersion: getambassador.io/v2\nkind: Mapping\nmetadata:\n  name: m\n  namespace: default\nspec:\n  service: quote\n"
	)
	toJSON := func(y string) []byte {
		j, err := yaml.YAMLToJSON([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	for _, c := range []struct {
		name      string
		h         admission.Handler
		req       admission.Request
		kind      string
		silent    bool
		reason    string
		mentioned string
	}{
		{"Deployment, server-side re-apply", workloads, update(deploymentGVK, raw(filepath.Join(testdata, "seed-without-proxy.yaml")), raw(filepath.Join(testdata, "seed-without-proxy.golden.yaml"))),
			kindDeployment, true, inject.ReasonUpToDate, ""},
		{"DaemonSet, server-side re-apply", workloads, update(daemonSetGVK, raw(filepath.Join(testdata, "chart-daemonset.yaml")), raw(filepath.Join(testdata, "chart-daemonset.golden.yaml"))),
			inject.KindDaemonSet, true, inject.ReasonUpToDate, ""},
		// An unchanged pod template keeps the sidecar stored from another configuration
		// (inject.UpdatePatch): the patch restores it, and nothing is said.
		{"Deployment, stored with an older sidecar", workloads, update(deploymentGVK, raw(filepath.Join(testdata, "seed-without-proxy.yaml")), raw(filepath.Join(testdata, "already-injected-old-version.yaml"))),
			kindDeployment, true, inject.ReasonKept, ""},
		{"Mapping, client-side re-apply", mappings, update(mappingV2GVK, toJSON(mappingIn), toJSON(mappingStored)),
			kindMapping, true, mapping.ReasonUpToDate, ""},
		{"Mapping, stored without tls", mappings, update(mappingV2GVK, toJSON(mappingIn), toJSON(mappingOld)),
			kindMapping, false, mapping.ReasonDefaulted, "set spec.tls"},
	} {
		t.Run(c.name, func(t *testing.T) {
			action := actionUnchanged
			if !c.silent {
				action = actionMutated
			}
			before := testutil.ToFloat64(metrics.admissions.WithLabelValues(c.kind, action, c.reason))
			resp, _ := admit(t, c.h, c.req)
			if len(resp.Patch) == 0 {
				t.Fatal("no patch: the request lacks what the webhook adds")
			}
			if c.silent && len(resp.Warnings) > 0 {
				t.Errorf("warnings %q for an update that changes nothing stored", resp.Warnings)
			}
			if !c.silent && !strings.Contains(strings.Join(resp.Warnings, "\n"), c.mentioned) {
				t.Errorf("warnings %q do not mention %q", resp.Warnings, c.mentioned)
			}
			if n := testutil.ToFloat64(metrics.admissions.WithLabelValues(c.kind, action, c.reason)) - before; n != 1 {
				t.Errorf("admissions{%s,%s,%s} += %v, want 1", c.kind, action, c.reason, n)
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
		"deployment": &WorkloadHandler{Config: cfg, Metrics: NewMetrics(nil)},
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
		{"wrong kind", admissionv1.Create, &metav1.GroupVersionKind{Version: "v1", Kind: "Service"}, `{}`, true, 200, "this webhook handles"},
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
