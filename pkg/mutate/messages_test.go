package mutate

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mapping"
)

// TestEveryAnswerSaysWhy: every AdmissionResponse of both handlers, as the API server reads
// it off the wire (response.status.message), says what was done and why, for every reason
// the metrics know, patched or not, and for the requests that are answered with an error.
func TestEveryAnswerSaysWhy(t *testing.T) {
	metrics := NewMetrics(nil)
	cfg := NewConfigHolder(inject.DefaultConfig())
	servers := map[string]http.Handler{
		DeploymentPath: postOnly(&admission.Webhook{Handler: &WorkloadHandler{Config: cfg, Metrics: metrics}}),
		PodPath:        postOnly(&admission.Webhook{Handler: &WorkloadHandler{Config: cfg, Metrics: metrics}}),
		MappingPath: postOnly(&admission.Webhook{Handler: &MappingHandler{Config: cfg, Metrics: metrics, Namespaces: mapping.StaticNamespaces{
			"meshed": {"istio-injection": "enabled"},
			"plain":  {},
		}}}),
	}

	deployment := func(file string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("..", "inject", "testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		return string(j)
	}
	mappingJSON := func(ns, annotations, spec string) string {
		return `{"apiVersion":"getambassador.io/v2","kind":"Mapping","metadata":{"name":"m","namespace":"` + ns + `"` +
			annotations + `},"spec":` + spec + `}`
	}
	const owned = `,"annotations":{"emissary-istio.io/defaulted-tls":"istio-upstream"}`
	request := func(op, kind, object string) string {
		r := `{"uid":"u","operation":"` + op + `","namespace":"meshed","kind":` + kind
		if object != "" {
			r += `,"object":` + object
		}
		return `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":` + r + `}}`
	}
	update := func(kind, object, old string) string {
		r := `{"uid":"u","operation":"UPDATE","namespace":"meshed","kind":` + kind + `,"object":` + object + `,"oldObject":` + old
		return `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":` + r + `}}`
	}
	const (
		deploymentKind = `{"group":"apps","version":"v1","kind":"Deployment"}`
		daemonSetKind  = `{"group":"apps","version":"v1","kind":"DaemonSet"}`
		podKind        = `{"version":"v1","kind":"Pod"}`
		mappingKind    = `{"group":"getambassador.io","version":"v2","kind":"Mapping"}`
	)
	create := func(kind, object string) string { return request("CREATE", kind, object) }

	type answerCase struct {
		name, path, body string
		patched          bool
		message          string // a part of the message
		reason           string // the metrics' reason label
	}
	cases := []answerCase{
		{"Deployment injected", DeploymentPath, create(deploymentKind, deployment("seed-without-proxy.yaml")), true, "injected istio-proxy", "injected"},
		{"Deployment up to date", DeploymentPath, create(deploymentKind, deployment("seed-without-proxy.golden.yaml")), false, "up to date", "up-to-date"},
		{"Deployment re-rendered", DeploymentPath, create(deploymentKind, deployment("already-injected-old-version.yaml")), true, "updated istio-proxy", "injected"},
		{"Deployment kept", DeploymentPath, update(deploymentKind, deployment("already-injected-old-version.yaml"), deployment("already-injected-old-version.yaml")), false, "kept the stored istio-proxy", "kept"},
		{"Deployment opted out after injection", DeploymentPath, create(deploymentKind, deployment("opt-out-after-injection.yaml")), true, "removed istio-proxy", "opt-out"},
		{"Deployment opted out", DeploymentPath, create(deploymentKind, deployment("opt-out.yaml")), false, "emissary-istio.io/inject", "opt-out"},
		{"not Emissary", DeploymentPath, create(deploymentKind, deployment("non-emissary.yaml")), false, "no container runs an image that emissaryImages", "not-emissary"},
		{"hand-written sidecar", DeploymentPath, create(deploymentKind, deployment("seed-hand-written.yaml")), false, "istio-proxy", "hand-written-sidecar"},
		{"container not found", DeploymentPath, create(deploymentKind, deployment("opt-in-container-not-found.yaml")), false, "does not exist", "container-not-found"},
		{"labelled, unknown image", DeploymentPath, create(deploymentKind, deployment("chart-unknown-image.yaml")), false, "emissaryImages", "unknown-image"},
		{"apiext", DeploymentPath, create(deploymentKind, deployment("apiext-3x.yaml")), false, "CRD conversion webhook", "apiext"},
		{"Consul connector", DeploymentPath, create(deploymentKind, deployment("consul-connector.yaml")), false, "Consul connector", "consul-connector"},
		{"agent", DeploymentPath, create(deploymentKind, deployment("agent-3x.yaml")), false, "Ambassador Cloud agent", "agent"},
		{"helper", DeploymentPath, create(deploymentKind, deployment("aes-injector.yaml")), false, "aes-injector", "helper"},
		{"DaemonSet injected", DeploymentPath, create(daemonSetKind, deployment("chart-daemonset.yaml")), true, "injected istio-proxy", "injected"},
		{"hostNetwork", DeploymentPath, create(daemonSetKind, deployment("chart-host-network.yaml")), false, "hostNetwork", "host-network"},
		{"bare Pod injected", PodPath, create(podKind, deployment("chart-bare-pod.yaml")), true, "injected istio-proxy", "injected"},
		{"Pod of a ReplicaSet", PodPath, create(podKind, deployment("replicaset-pod.yaml")), false, "belongs to ReplicaSet", "owned-pod"},
		{"Pod of an earlier configuration", PodPath, create(podKind, deployment("bare-pod-old-config.yaml")), false, "re-create", "pod-immutable"},

		{"Mapping defaulted", MappingPath, create(mappingKind, mappingJSON("meshed", "", `{"service":"quote"}`)), true, "set tls: istio-upstream", "defaulted"},
		{"Mapping up to date", MappingPath, create(mappingKind, mappingJSON("meshed", owned, `{"service":"quote:80","tls":"istio-upstream"}`)), false, "already has tls", "up-to-date"},
		{"Mapping reverted", MappingPath, create(mappingKind, mappingJSON("plain", owned, `{"service":"quote:80","tls":"istio-upstream"}`)), true, "removed spec.tls", "not-meshed"},
		{"user's tls", MappingPath, create(mappingKind, mappingJSON("meshed", "", `{"service":"quote","tls":false}`)), false, "already set", "tls-set"},
		{"scheme", MappingPath, create(mappingKind, mappingJSON("meshed", "", `{"service":"http://quote"}`)), false, "scheme", "scheme"},
		{"IP", MappingPath, create(mappingKind, mappingJSON("meshed", "", `{"service":"10.0.0.1"}`)), false, "IP address", "ip"},
		{"external", MappingPath, create(mappingKind, mappingJSON("meshed", "", `{"service":"api.example.com"}`)), false, "not a Kubernetes Service", "external"},
		{"invalid service", MappingPath, create(mappingKind, mappingJSON("meshed", "", `{"service":"quote:99999"}`)), false, "cannot parse", "invalid-service"},
		{"no service", MappingPath, create(mappingKind, mappingJSON("meshed", "", `{"prefix":"/"}`)), false, "not set", "no-service"},
		{"resolver", MappingPath, create(mappingKind, mappingJSON("meshed", "", `{"service":"quote","resolver":"consul-dc1"}`)), false, "resolver", "resolver"},
		{"opt-out", MappingPath, create(mappingKind, mappingJSON("meshed", `,"annotations":{"emissary-istio.io/tls":"skip"}`, `{"service":"quote"}`)), false, "skip", "opt-out"},
		{"not meshed", MappingPath, create(mappingKind, mappingJSON("plain", "", `{"service":"quote"}`)), false, "not meshed", "not-meshed"},
		{"namespace unknown", MappingPath, create(mappingKind, mappingJSON("meshed", "", `{"service":"quote.nowhere"}`)), false, "not found", "namespace-unknown"},
		{"bad spec", MappingPath, create(mappingKind, mappingJSON("meshed", "", `"quote"`)), false, "spec is not an object", "bad-spec"},
		{"redirect", MappingPath, create(mappingKind, mappingJSON("meshed", "", `{"service":"example.com","host_redirect":true}`)), false, "redirect", "redirect"},
	}
	for _, path := range []string{DeploymentPath, MappingPath} {
		kind := map[string]string{DeploymentPath: deploymentKind, MappingPath: mappingKind}[path]
		cases = append(cases, []answerCase{
			{path + " DELETE", path, request("DELETE", kind, `{}`), false, "not mutated", "operation"},
			{path + " wrong kind", path, create(`{"version":"v1","kind":"Service"}`, `{}`), false, "this webhook handles", "wrong-kind"},
			{path + " no request", path, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, false, "has no request", "no-request"},
			{path + " no operation", path, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"}}`, false, "operation is empty", "no-request"},
			{path + " no object", path, create(kind, ""), false, "request.object is empty", "no-object"},
			{path + " undecodable object", path, create(kind, `[1]`), false, "request.object is not a valid", "decode"},
			// Refused by controller-runtime before a handler runs: no metric of ours.
			{path + " undecodable review", path, `{"request": 7}`, false, "json", ""},
		}...)
	}

	// answers counts the admissions of kind answered with reason, whatever the action.
	answers := func(kind, reason string) float64 {
		n := testutil.ToFloat64(metrics.errors.WithLabelValues(kind, reason))
		for _, action := range []string{actionMutated, actionUnchanged, actionSkipped} {
			n += testutil.ToFloat64(metrics.admissions.WithLabelValues(kind, action, reason))
		}
		return n
	}
	var want []string
	for _, r := range inject.Reasons {
		kind := kindDeployment
		switch r {
		case inject.ReasonOwnedPod, inject.ReasonPodImmutable:
			kind = inject.KindPod
		case inject.ReasonHostNetwork:
			kind = inject.KindDaemonSet
		}
		want = append(want, kind+"/"+r)
	}
	for _, r := range mapping.Reasons {
		want = append(want, kindMapping+"/"+r)
	}
	for _, kind := range []string{kindDeployment, kindMapping} {
		for _, r := range []string{"operation", "wrong-kind", "no-request", "no-object", "decode"} {
			want = append(want, kind+"/"+r)
		}
	}
	seen := map[string]bool{}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kind := map[string]string{DeploymentPath: kindDeployment, PodPath: inject.KindPod, MappingPath: kindMapping}[c.path]
			if strings.Contains(c.body, `"kind":"DaemonSet"`) {
				kind = inject.KindDaemonSet
			}
			before := answers(kind, c.reason)
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, c.path, strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			servers[c.path].ServeHTTP(rec, req)
			// Read the answer as JSON, not through the Go types: the field is "status".
			var review struct {
				Response struct {
					Patch  []byte `json:"patch"`
					Status struct {
						Message string `json:"message"`
					} `json:"status"`
				} `json:"response"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil {
				t.Fatalf("HTTP %d, not an AdmissionReview: %v\n%s", rec.Code, err, rec.Body)
			}
			if got := len(review.Response.Patch) > 0; got != c.patched {
				t.Errorf("patched %v, want %v", got, c.patched)
			}
			if msg := review.Response.Status.Message; msg == "" || !strings.Contains(msg, c.message) {
				t.Errorf("response.status.message %q, want one that says %q\n%s", msg, c.message, rec.Body)
			}
			if c.reason != "" {
				if n := answers(kind, c.reason) - before; n != 1 {
					t.Errorf("%v answers counted with reason %s, want 1", n, c.reason)
				}
				seen[kind+"/"+c.reason] = true
			}
		})
	}

	// The cases reach every reason the metrics report.
	for _, w := range want {
		if !seen[w] {
			t.Errorf("no case answers with reason %s", w)
		}
	}
}
