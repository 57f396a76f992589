package envtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/mutate"
)

// The bad-input corpus: hand-made requests straight to the real HTTPS server (the one the API
// server calls), each with the HTTP status and the AdmissionResponse it must get. The
// AdmissionReview protocol answers every review with HTTP 200 and puts the verdict in
// response.allowed and response.result.code; only what is not a review at all (another HTTP
// method) gets an HTTP error. Never a 5xx, in either place; errors say what was wrong.

const (
	biMeshedNS = "bad-input"
	biReviewV1 = "admission.k8s.io/v1"
)

var (
	biDeploymentKind = map[string]string{"group": "apps", "version": "v1", "kind": "Deployment"}
	biMappingKind    = map[string]string{"group": "getambassador.io", "version": "v2", "kind": "Mapping"}
	biPodKind        = map[string]string{"group": "", "version": "v1", "kind": "Pod"}
)

// biClient trusts the webhook's CA and nothing else.
func biClient(e *Env) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CABundle)
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 16,
		},
	}
}

// biDeployment is a minimal Emissary Deployment in biMeshedNS, changed by mut.
func biDeployment(mut func(d *appsv1.Deployment)) []byte {
	d := ProbeDeployment()
	d.APIVersion, d.Kind = "apps/v1", "Deployment"
	d.Name, d.Namespace = "bad-input", biMeshedNS
	if mut != nil {
		mut(d)
	}
	b, err := json.Marshal(d)
	if err != nil {
		panic(err)
	}
	return b
}

// biMapping is the seed's Mapping (service quote) in biMeshedNS, changed by mut.
func biMapping(mut func(m map[string]interface{})) []byte {
	m := map[string]interface{}{
		"apiVersion": "getambassador.io/v2", "kind": "Mapping",
		"metadata": map[string]interface{}{"name": "bad-input", "namespace": biMeshedNS},
		"spec":     map[string]interface{}{"prefix": "/bad-input/", "service": "quote"},
	}
	if mut != nil {
		mut(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// biRequest is an AdmissionRequest as the API server writes it; object nil leaves it out.
func biRequest(uid string, kind map[string]string, op string, object []byte) map[string]interface{} {
	r := map[string]interface{}{
		"uid": uid, "kind": kind, "operation": op, "namespace": biMeshedNS, "name": "bad-input",
		"resource":  map[string]string{"group": kind["group"], "version": kind["version"], "resource": strings.ToLower(kind["kind"]) + "s"},
		"userInfo":  map[string]interface{}{"username": "bad-input"},
		"options":   map[string]string{"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
		"dryRun":    false,
		"oldObject": nil,
	}
	if object != nil {
		r["object"] = json.RawMessage(object)
	}
	return r
}

// biReview wraps request (nil: no "request" member) in an AdmissionReview of apiVersion.
func biReview(apiVersion string, request interface{}) []byte {
	r := map[string]interface{}{"apiVersion": apiVersion, "kind": "AdmissionReview"}
	if request != nil {
		r["request"] = request
	}
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	return b
}

func biWith(r map[string]interface{}, kv ...interface{}) map[string]interface{} {
	for i := 0; i+1 < len(kv); i += 2 {
		r[kv[i].(string)] = kv[i+1]
	}
	return r
}

type biWant struct {
	status  int    // HTTP status
	allowed bool   // response.allowed
	code    int32  // response.result.code
	msg     string // in response.result.message (or in the body, for a non-review answer)
	patch   bool   // response.patch present
	version string // apiVersion of the answer; "" when the server could not read one
	kind    string // kind of the answer when there is a version; AdmissionReview when empty
}

type biCase struct {
	name        string
	path        string
	method      string // POST when empty
	contentType string // application/json when empty; "none" sends none
	body        []byte
	object      []byte // the request's object, to apply a patch to
	want        biWant
	// check looks further at the patched object (want.patch) or the answer.
	check func(t *testing.T, patched []byte, resp *admissionv1.AdmissionResponse)
}

// biOK is the usual answer to a review the handler read: HTTP 200, allowed, code 200.
func biOK(msg string, patch bool) biWant {
	return biWant{status: 200, allowed: true, code: 200, msg: msg, patch: patch, version: biReviewV1}
}

// biBad is a review answered with a 4xx result.
func biBad(code int32, msg, version string) biWant {
	return biWant{status: 200, code: code, msg: msg, version: version}
}

func biCases() []biCase {
	dep, mapping := mutate.DeploymentPath, mutate.MappingPath
	seed := biDeployment(nil)
	seedMapping := biMapping(nil)
	valid := biReview(biReviewV1, biRequest("uid-valid", biDeploymentKind, "CREATE", seed))
	huge := strings.Repeat("x", 1<<20)
	control := "bad\x00input\x1b[31m\u202e-ĉ-名前-\u0007"

	hasProxy := func(t *testing.T, patched []byte, _ *admissionv1.AdmissionResponse) {
		t.Helper()
		var d appsv1.Deployment
		if err := json.Unmarshal(patched, &d); err != nil {
			t.Fatalf("patched object is not a Deployment: %v", err)
		}
		if countContainers(&d, "istio-proxy") != 1 {
			t.Fatalf("patched Deployment has %d istio-proxy containers", countContainers(&d, "istio-proxy"))
		}
	}
	defaulted := func(service string) func(*testing.T, []byte, *admissionv1.AdmissionResponse) {
		return func(t *testing.T, patched []byte, _ *admissionv1.AdmissionResponse) {
			t.Helper()
			var m map[string]interface{}
			if err := json.Unmarshal(patched, &m); err != nil {
				t.Fatal(err)
			}
			tls, _, _ := unstructured.NestedString(m, "spec", "tls")
			svc, _, _ := unstructured.NestedString(m, "spec", "service")
			if tls != "istio-upstream" || svc != service {
				t.Fatalf("patched Mapping: tls %q service %q, want istio-upstream %q", tls, svc, service)
			}
		}
	}
	printable := func(t *testing.T, _ []byte, resp *admissionv1.AdmissionResponse) {
		t.Helper()
		for _, s := range append([]string{resp.Result.Message}, resp.Warnings...) {
			if !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
				t.Errorf("message or warning carries control characters (the API server drops such warnings): %q", s)
			}
		}
	}

	return []biCase{
		// HTTP and AdmissionReview framing (the same code serves both paths).
		{name: "empty body", path: dep, body: nil, want: biBad(400, "request body is empty", "")},
		{name: "empty body mapping", path: mapping, body: nil, want: biBad(400, "request body is empty", "")},
		{name: "not JSON", path: dep, body: []byte("kubectl apply -f emissary.yaml"), want: biBad(400, "json parse error", "")},
		{name: "JSON but not an object", path: mapping, body: []byte(`[1,2,3]`), want: biBad(400, "cannot unmarshal array", "")},
		{name: "truncated JSON", path: dep, body: valid[:len(valid)/2], want: biBad(400, "unexpected end of JSON input", "")},
		{name: "wrong Content-Type", path: dep, contentType: "text/plain", body: valid, want: biBad(400, "contentType=text/plain, expected application/json", "")},
		{name: "no Content-Type", path: mapping, contentType: "none", body: valid, want: biBad(400, "expected application/json", "")},
		// controller-runtime compares the header exactly; the API server sends exactly this.
		{name: "Content-Type with charset", path: dep, contentType: "application/json; charset=utf-8", body: valid, want: biBad(400, "expected application/json", "")},
		{name: "body over the 7 MiB limit", path: dep, body: biReview(biReviewV1, biRequest("uid-big", biDeploymentKind, "CREATE",
			biDeployment(func(d *appsv1.Deployment) { d.Annotations = map[string]string{"big": strings.Repeat("y", 7<<20)} }))),
			want: biBad(413, "request entity is too large; limit is 7340032 bytes", "")},
		{name: "GET", path: dep, method: http.MethodGet, want: biWant{status: 405, msg: "method GET not allowed: POST an admission.k8s.io/v1 AdmissionReview"}},
		{name: "PUT", path: mapping, method: http.MethodPut, body: valid, want: biWant{status: 405, msg: "method PUT not allowed"}},
		{name: "unknown path", path: "/mutate-statefulsets", body: valid, want: biWant{status: 404, msg: "404 page not found"}},
		// controller-runtime reads any apiVersion and kind as an AdmissionReview and answers
		// in the same apiVersion and kind: a Pod has no request; an unknown review version
		// (the API server has none) is read like v1.
		{name: "a Pod instead of an AdmissionReview", path: dep, body: []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}`),
			want: biWant{status: 200, code: 400, msg: "the AdmissionReview has no request", version: "v1", kind: "Pod"}},
		{name: "AdmissionReview of an unknown version", path: dep, body: biReview("admission.k8s.io/v2", biRequest("uid-v2", biDeploymentKind, "CREATE", seed)),
			object: seed, want: biWant{status: 200, allowed: true, code: 200, msg: "injected istio-proxy", patch: true, version: "admission.k8s.io/v2"}, check: hasProxy},
		// v1beta1 is answered in kind (controller-runtime decodes both versions); the shipped
		// configuration only ever asks for v1.
		{name: "AdmissionReview v1beta1", path: dep, body: biReview("admission.k8s.io/v1beta1", biRequest("uid-v1beta1", biDeploymentKind, "CREATE", seed)),
			object: seed, want: biWant{status: 200, allowed: true, code: 200, msg: "injected istio-proxy", patch: true, version: "admission.k8s.io/v1beta1"}, check: hasProxy},
		{name: "AdmissionReview v1beta1 mapping", path: mapping, body: biReview("admission.k8s.io/v1beta1", biRequest("uid-v1beta1-m", biMappingKind, "CREATE", seedMapping)),
			object: seedMapping, want: biWant{status: 200, allowed: true, code: 200, msg: "set tls: istio-upstream", patch: true, version: "admission.k8s.io/v1beta1"}, check: defaulted("quote:80")},
		{name: "missing request", path: dep, body: biReview(biReviewV1, nil), want: biBad(400, "the AdmissionReview has no request", biReviewV1)},
		{name: "request null", path: mapping, body: []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}`), want: biBad(400, "the AdmissionReview has no request", biReviewV1)},
		{name: "request without operation", path: dep, body: biReview(biReviewV1, biWith(biRequest("uid-noop", biDeploymentKind, "", seed))), want: biBad(400, "request.operation is empty", biReviewV1)},
		{name: "request of the wrong type", path: dep, body: []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":"CREATE"}`), want: biBad(400, "cannot unmarshal string", "")},

		// The Deployment handler.
		{name: "valid Emissary Deployment", path: dep, body: valid, object: seed, want: biOK("injected istio-proxy", true), check: hasProxy},
		{name: "dry run gets the same answer", path: dep, body: biReview(biReviewV1, biWith(biRequest("uid-dry", biDeploymentKind, "CREATE", seed), "dryRun", true)),
			object: seed, want: biOK("injected istio-proxy", true), check: hasProxy},
		{name: "UPDATE", path: dep, body: biReview(biReviewV1, biWith(biRequest("uid-update", biDeploymentKind, "UPDATE", seed), "oldObject", json.RawMessage(seed))),
			object: seed, want: biOK("injected istio-proxy", true), check: hasProxy},
		{name: "missing object", path: dep, body: biReview(biReviewV1, biRequest("uid-noobj", biDeploymentKind, "CREATE", nil)), want: biBad(400, "request.object is empty", biReviewV1)},
		{name: "object null", path: dep, body: biReview(biReviewV1, biRequest("uid-null", biDeploymentKind, "CREATE", []byte("null"))), want: biBad(400, "request.object is empty", biReviewV1)},
		{name: "object is a string", path: dep, body: biReview(biReviewV1, biRequest("uid-str", biDeploymentKind, "CREATE", []byte(`"a Deployment"`))),
			want: biBad(400, "request.object is not a valid apps/v1 Deployment", biReviewV1)},
		{name: "containers of the wrong type", path: dep, body: biReview(biReviewV1, biRequest("uid-ctype", biDeploymentKind, "CREATE",
			[]byte(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"template":{"spec":{"containers":{"name":"ambassador"}}}}}`))),
			want: biBad(400, "request.object is not a valid apps/v1 Deployment", biReviewV1)},
		{name: "wrong kind", path: dep, body: biReview(biReviewV1, biRequest("uid-pod", biPodKind, "CREATE", []byte(`{"apiVersion":"v1","kind":"Pod"}`))),
			want: biOK("this webhook handles apps/v1 Deployment or apps/v1 DaemonSet, not /v1, Kind=Pod", false)},
		{name: "Mapping sent to the Deployment path", path: dep, body: biReview(biReviewV1, biRequest("uid-cross", biMappingKind, "CREATE", seedMapping)),
			want: biOK("not getambassador.io/v2, Kind=Mapping", false)},
		{name: "DELETE", path: dep, body: biReview(biReviewV1, biRequest("uid-del", biDeploymentKind, "DELETE", nil)), want: biOK("operation DELETE is not mutated", false)},
		{name: "CONNECT", path: dep, body: biReview(biReviewV1, biRequest("uid-conn", biDeploymentKind, "CONNECT", nil)), want: biOK("operation CONNECT is not mutated", false)},
		{name: "unknown operation", path: dep, body: biReview(biReviewV1, biRequest("uid-op", biDeploymentKind, "PATCH", seed)), want: biOK("operation PATCH is not mutated", false)},
		{name: "Deployment with no containers", path: dep, body: biReview(biReviewV1, biRequest("uid-noc", biDeploymentKind, "CREATE",
			biDeployment(func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers = nil }))), want: biOK("not injected", false)},
		{name: "Deployment that is not Emissary", path: dep, body: biReview(biReviewV1, biRequest("uid-nginx", biDeploymentKind, "CREATE",
			biDeployment(func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "nginx:1.27" }))), want: biOK("not injected", false)},
		// Field names are case-sensitive, as the API server reads them: "Spec" is not spec.
		{name: "field names in the wrong case", path: dep, body: biReview(biReviewV1, biRequest("uid-case", biDeploymentKind, "CREATE",
			[]byte(`{"apiVersion":"apps/v1","kind":"Deployment","Spec":{"Template":{"Spec":{"Containers":[{"name":"a","image":"emissary"}]}}}}`))),
			want: biOK("not injected", false)},
		{name: "1 MB annotation", path: dep, body: biReview(biReviewV1, biRequest("uid-1mb", biDeploymentKind, "CREATE",
			biDeployment(func(d *appsv1.Deployment) { d.Spec.Template.Annotations = map[string]string{"big": huge} }))),
			object: biDeployment(func(d *appsv1.Deployment) { d.Spec.Template.Annotations = map[string]string{"big": huge} }),
			want:   biOK("injected istio-proxy", true), check: func(t *testing.T, patched []byte, resp *admissionv1.AdmissionResponse) {
				hasProxy(t, patched, resp)
				var d appsv1.Deployment
				_ = json.Unmarshal(patched, &d)
				if d.Spec.Template.Annotations["big"] != huge {
					t.Fatal("the 1 MB annotation did not survive the patch")
				}
			}},
		{name: "unicode and control characters in names", path: dep, body: biReview(biReviewV1, biRequest("uid-ctl", biDeploymentKind, "CREATE",
			biDeployment(func(d *appsv1.Deployment) { d.Name = control; d.Spec.Template.Spec.Containers[0].Name = control }))),
			object: biDeployment(func(d *appsv1.Deployment) { d.Name = control; d.Spec.Template.Spec.Containers[0].Name = control }),
			want:   biOK("injected istio-proxy", true), check: func(t *testing.T, patched []byte, resp *admissionv1.AdmissionResponse) {
				hasProxy(t, patched, resp)
				printable(t, patched, resp)
			}},
		{name: "huge env list", path: dep, body: biReview(biReviewV1, biRequest("uid-env", biDeploymentKind, "CREATE", biDeployment(biHugeEnv))),
			object: biDeployment(biHugeEnv), want: biOK("injected istio-proxy", true), check: func(t *testing.T, patched []byte, resp *admissionv1.AdmissionResponse) {
				hasProxy(t, patched, resp)
				var d appsv1.Deployment
				_ = json.Unmarshal(patched, &d)
				if n := len(d.Spec.Template.Spec.Containers[0].Env); n != 20000+2 {
					t.Fatalf("Emissary container has %d env vars, want the 20000 given and 2 injected", n)
				}
			}},

		// The Mapping handler.
		{name: "valid Mapping", path: mapping, body: biReview(biReviewV1, biRequest("uid-m", biMappingKind, "CREATE", seedMapping)),
			object: seedMapping, want: biOK("set tls: istio-upstream and pinned service quote -> quote:80", true), check: defaulted("quote:80")},
		{name: "Mapping missing object", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-noobj", biMappingKind, "CREATE", nil)), want: biBad(400, "request.object is empty", biReviewV1)},
		{name: "Mapping object is an array", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-arr", biMappingKind, "CREATE", []byte(`[]`))),
			want: biBad(400, "request.object is not a valid Mapping", biReviewV1)},
		{name: "Mapping object is a number", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-num", biMappingKind, "CREATE", []byte(`42`))),
			want: biBad(400, "request.object is not a valid Mapping", biReviewV1)},
		{name: "Mapping spec is a string", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-spec", biMappingKind, "CREATE",
			biMapping(func(m map[string]interface{}) { m["spec"] = "service: quote" }))), want: biOK("spec is not an object", false)},
		{name: "Mapping spec is an array", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-speca", biMappingKind, "CREATE",
			biMapping(func(m map[string]interface{}) { m["spec"] = []string{"quote"} }))), want: biOK("spec is not an object", false)},
		{name: "Mapping without spec", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-nospec", biMappingKind, "CREATE",
			biMapping(func(m map[string]interface{}) { delete(m, "spec") }))), want: biOK("the Mapping has no spec", false)},
		{name: "service is a number", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-svcn", biMappingKind, "CREATE",
			biMapping(func(m map[string]interface{}) { m["spec"].(map[string]interface{})["service"] = 8080 }))), want: biOK("spec.service is a number, not a string", false)},
		{name: "service is an object", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-svco", biMappingKind, "CREATE",
			biMapping(func(m map[string]interface{}) {
				m["spec"].(map[string]interface{})["service"] = map[string]string{"name": "quote"}
			}))), want: biOK("spec.service is a object, not a string", false)},
		{name: "tls is a number", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-tlsn", biMappingKind, "CREATE",
			biMapping(func(m map[string]interface{}) { m["spec"].(map[string]interface{})["tls"] = 1 }))), want: biOK("spec.tls is a number, not a string or a bool", false)},
		{name: "metadata is a string", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-meta", biMappingKind, "CREATE",
			biMapping(func(m map[string]interface{}) { m["metadata"] = "bad-input" }))), want: biOK("metadata is not an object", false)},
		{name: "Mapping wrong kind", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-kind", biDeploymentKind, "CREATE", seed)),
			want: biOK("this webhook handles getambassador.io/, Kind=Mapping, not apps/v1, Kind=Deployment", false)},
		{name: "Mapping DELETE", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-del", biMappingKind, "DELETE", nil)), want: biOK("operation DELETE is not mutated", false)},
		{name: "Mapping CONNECT", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-conn", biMappingKind, "CONNECT", nil)), want: biOK("operation CONNECT is not mutated", false)},
		{name: "unicode service", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-uni", biMappingKind, "CREATE",
			biMapping(func(m map[string]interface{}) { m["spec"].(map[string]interface{})["service"] = "квота.default" }))),
			want: biOK("is not a Kubernetes Service name", false)},
		{name: "control characters in the Mapping", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-ctl", biMappingKind, "CREATE",
			biMapping(func(m map[string]interface{}) {
				m["metadata"].(map[string]interface{})["name"] = control
				m["spec"].(map[string]interface{})["service"] = "quote\x1b[2J"
			}))), want: biOK("Emissary cannot parse service", false), check: printable},
		{name: "100 kB service", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-long", biMappingKind, "CREATE",
			biMapping(func(m map[string]interface{}) {
				m["spec"].(map[string]interface{})["service"] = strings.Repeat("q", 100<<10)
			}))),
			want: biOK("left unchanged", false), check: func(t *testing.T, _ []byte, resp *admissionv1.AdmissionResponse) {
				if n := len(resp.Result.Message); n > 2000 {
					t.Fatalf("message of %d bytes for a 100 kB service: user text must be clipped", n)
				}
			}},
		{name: "Mapping with a 1 MB annotation", path: mapping, body: biReview(biReviewV1, biRequest("uid-m-1mb", biMappingKind, "CREATE",
			biMapping(func(m map[string]interface{}) {
				m["metadata"].(map[string]interface{})["annotations"] = map[string]string{"big": huge}
			}))),
			object: biMapping(func(m map[string]interface{}) {
				m["metadata"].(map[string]interface{})["annotations"] = map[string]string{"big": huge}
			}), want: biOK("set tls: istio-upstream", true), check: defaulted("quote:80")},
		{name: "Mapping without namespace", path: mapping, body: biReview(biReviewV1, biWith(biRequest("uid-m-nons", biMappingKind, "CREATE",
			biMapping(func(m map[string]interface{}) { delete(m["metadata"].(map[string]interface{}), "namespace") })), "namespace", "")),
			want: biOK("bare name and the Mapping has no namespace", false)},
	}
}

func biHugeEnv(d *appsv1.Deployment) {
	env := make([]corev1.EnvVar, 20000)
	for i := range env {
		env[i] = corev1.EnvVar{Name: fmt.Sprintf("VAR_%05d", i), Value: strings.Repeat("v", 16)}
	}
	d.Spec.Template.Spec.Containers[0].Env = env
}

// TestBadInputCorpus posts every case to the real HTTPS server.
func TestBadInputCorpus(t *testing.T) {
	ensureNamespace(t, biMeshedNS, "istio-injection=enabled")
	c := biClient(env)
	cases := biCases()
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	// The webhook's namespace cache has seen the label once a Mapping gets a patch.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, resp := biPost(t, c, "POST", mutate.MappingPath, "application/json", biReview(biReviewV1, biRequest("uid-wait", biMappingKind, "CREATE", biMapping(nil))))
		if resp != nil && len(resp.Patch) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the webhook never saw namespace bad-input as meshed")
		}
		time.Sleep(50 * time.Millisecond)
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method, ct := tc.method, tc.contentType
			if method == "" {
				method = http.MethodPost
			}
			if ct == "" {
				ct = "application/json"
			}
			httpResp, body := biSend(t, c, method, tc.path, ct, tc.body)
			if httpResp.StatusCode >= 500 || httpResp.StatusCode != tc.want.status {
				t.Fatalf("HTTP %d, want %d; body: %.300s", httpResp.StatusCode, tc.want.status, body)
			}
			if tc.want.status != http.StatusOK { // not a review: the body says what was wrong
				if !strings.Contains(string(body), tc.want.msg) {
					t.Fatalf("body %q does not say %q", body, tc.want.msg)
				}
				if tc.want.status == http.StatusMethodNotAllowed && httpResp.Header.Get("Allow") != http.MethodPost {
					t.Errorf("Allow: %q, want POST", httpResp.Header.Get("Allow"))
				}
				return
			}
			var review admissionv1.AdmissionReview
			if err := json.Unmarshal(body, &review); err != nil || review.Response == nil {
				t.Fatalf("not an AdmissionReview answer (%v): %.300s", err, body)
			}
			resp := review.Response
			wantKind := tc.want.kind
			if wantKind == "" && tc.want.version != "" {
				wantKind = "AdmissionReview"
			}
			if review.APIVersion != tc.want.version || review.Kind != wantKind {
				t.Errorf("answer is %q %q, want %q %q", review.APIVersion, review.Kind, tc.want.version, wantKind)
			}
			if resp.Result == nil {
				t.Fatal("no result in the answer")
			}
			if resp.Result.Code >= 500 {
				t.Fatalf("5xx result %d: %s", resp.Result.Code, resp.Result.Message)
			}
			if resp.Allowed != tc.want.allowed || resp.Result.Code != tc.want.code {
				t.Fatalf("allowed=%v code=%d (%s), want allowed=%v code=%d", resp.Allowed, resp.Result.Code, resp.Result.Message, tc.want.allowed, tc.want.code)
			}
			if !strings.Contains(resp.Result.Message, tc.want.msg) {
				t.Errorf("message %q does not say %q", biClip(resp.Result.Message), tc.want.msg)
			}
			if uid := biUID(tc.body); tc.want.version != "" && uid != "" && string(resp.UID) != uid {
				t.Errorf("answer uid %q, want the request's %q", resp.UID, uid)
			}
			if (len(resp.Patch) > 0) != tc.want.patch {
				t.Fatalf("patch %.200s, want a patch: %v", resp.Patch, tc.want.patch)
			}
			var patched []byte
			if tc.want.patch {
				if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
					t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
				}
				if len(resp.Warnings) == 0 {
					t.Error("a mutation without a warning for kubectl to show")
				}
				p, err := jsonpatch.DecodePatch(resp.Patch)
				if err != nil {
					t.Fatal(err)
				}
				if patched, err = p.Apply(tc.object); err != nil {
					t.Fatalf("patch does not apply to the request's object: %v", err)
				}
			}
			if tc.check != nil {
				tc.check(t, patched, resp)
			}
		})
	}
}

// biSend sends one request; a response the server wrote before reading the whole body (the
// over-limit case) counts, a transport error fails the test.
func biSend(t *testing.T, c *http.Client, method, path, contentType string, body []byte) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, env.WebhookURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "none" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, out
}

// biPost posts a review and decodes the answer (nil if it is none).
func biPost(t *testing.T, c *http.Client, method, path, contentType string, body []byte) (*http.Response, *admissionv1.AdmissionResponse) {
	t.Helper()
	resp, out := biSend(t, c, method, path, contentType, body)
	var review admissionv1.AdmissionReview
	if json.Unmarshal(out, &review) != nil {
		return resp, nil
	}
	return resp, review.Response
}

// biUID is the request uid in a review body, if it can be read.
func biUID(body []byte) string {
	var r struct {
		Request *struct {
			UID string `json:"uid"`
		} `json:"request"`
	}
	if json.Unmarshal(body, &r) != nil || r.Request == nil {
		return ""
	}
	return r.Request.UID
}

func biClip(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// TestDryRunHasNoSideEffects: server-side dry-run applies go through the webhook (the dry-run
// answer is injected and defaulted) and leave nothing behind: no object, no Event.
func TestDryRunHasNoSideEffects(t *testing.T) {
	const ns = "dry-run-only"
	ensureNamespace(t, ns, "istio-injection=enabled")
	deployment := strings.ReplaceAll(string(biDeployment(nil)), `"namespace":"`+biMeshedNS+`"`, `"namespace":"`+ns+`"`)
	mapping := mappingYAML("v2", ns, "dry-run", "  service: quote\n")

	// The webhook sees the namespace as meshed before the first dry run is judged.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _, err := env.Kubectl([]byte(mapping), "apply", "--dry-run=server", "-o", "jsonpath={.spec.tls}", "-f", "-")
		if err == nil && out == "istio-upstream" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dry-run Mapping never defaulted: %q %v", out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < 3; i++ {
		out, _, err := env.Kubectl([]byte(deployment), "apply", "--dry-run=server", "-o", "jsonpath={.spec.template.spec.containers[*].name}", "-f", "-")
		if err != nil || !strings.Contains(out, "istio-proxy") {
			t.Fatalf("dry-run Deployment not injected: %q %v", out, err)
		}
		out, _, err = env.Kubectl([]byte(mapping), "create", "--dry-run=server", "-o", "jsonpath={.spec.tls} {.spec.service}", "-f", "-")
		if err != nil || out != "istio-upstream quote:80" {
			t.Fatalf("dry-run Mapping: %q %v", out, err)
		}
	}

	ctx := context.Background()
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "bad-input"}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("dry-run Deployment was stored (get: %v)", err)
	}
	m := &unstructured.Unstructured{}
	m.SetGroupVersionKind(schema.GroupVersionKind{Group: "getambassador.io", Version: "v2", Kind: "Mapping"})
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "dry-run"}, m); !apierrors.IsNotFound(err) {
		t.Errorf("dry-run Mapping was stored (get: %v)", err)
	}
	events := &corev1.EventList{}
	if err := env.Client.List(ctx, events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(events.Items) != 0 {
		t.Errorf("dry runs left %d Events in %s, e.g. %s: %s", len(events.Items), ns, events.Items[0].Reason, events.Items[0].Message)
	}
	out, _, err := env.Kubectl(nil, "get", "events", "-n", ns, "-o", "name")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("kubectl get events: %q %v", out, err)
	}
}

// TestServingTLSVersions: the webhook's HTTPS server refuses TLS 1.1 and older, and accepts
// TLS 1.2 and 1.3 with a certificate the CA bundle trusts (docs/security.md).
func TestServingTLSVersions(t *testing.T) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.CABundle)
	addr := strings.TrimPrefix(env.WebhookURL, "https://")
	for _, c := range []struct {
		name    string
		version uint16
		ok      bool
	}{
		{"TLS 1.0", tls.VersionTLS10, false},
		{"TLS 1.1", tls.VersionTLS11, false},
		{"TLS 1.2", tls.VersionTLS12, true},
		{"TLS 1.3", tls.VersionTLS13, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MinVersion: c.version, MaxVersion: c.version})
			if err == nil {
				defer conn.Close()
				if got := conn.ConnectionState().Version; got != c.version {
					t.Fatalf("negotiated %s", tls.VersionName(got))
				}
			}
			if (err == nil) != c.ok {
				t.Fatalf("handshake error %v, want success %v", err, c.ok)
			}
		})
	}
}
