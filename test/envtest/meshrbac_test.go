package envtest

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mutate"
)

// TestMeshViewWithoutRBAC: a webhook that may read namespaces but not Istio's objects (the
// Role and the ClusterRole rule left out) still becomes ready, renders a new Emissary
// Deployment from its defaults with a warning that says what it could not read, and keeps the
// sidecar of an injected one whose template changed instead of re-rendering it from defaults.
func TestMeshViewWithoutRBAC(t *testing.T) {
	const user = "mesh-without-rbac"
	rbac := fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: %[1]s}
rules:
- {apiGroups: [""], resources: [namespaces], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: %[1]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: %[1]s}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: %[1]s}
`, user)
	if _, stderr, err := env.Kubectl([]byte(rbac), "apply", "-f", "-"); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	t.Cleanup(func() { _, _, _ = env.Kubectl([]byte(rbac), "delete", "-f", "-") })
	u, err := env.control.AddUser(crenvtest.User{Name: user}, nil)
	if err != nil {
		t.Fatal(err)
	}
	port, readyz := startExtraServer(t, u.Config(), env.CertDir)
	if body := waitReady(t, readyz, 30*time.Second); !strings.Contains(body, "mesh-cache ok") {
		t.Fatalf("/readyz does not report the mesh cache:\n%s", body)
	}
	client := webhookClient(t)
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, mutate.DeploymentPath)

	raw, err := os.ReadFile(testdata("emissary-deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var seed appsv1.Deployment
	if err := yaml.Unmarshal(raw, &seed); err != nil {
		t.Fatal(err)
	}
	ensureNamespace(t, seed.Namespace)

	// A CREATE: the defaults, and a warning naming what could not be read.
	resp := postReview(t, client, url, deploymentReview(t, admissionv1.Create, &seed, nil))
	warnings := strings.Join(resp.Warnings, "\n")
	if len(resp.Patch) == 0 || !strings.Contains(warnings, "could not read the Istio mesh") || !strings.Contains(warnings, "forbidden") {
		t.Fatalf("CREATE: patch %d bytes, warnings:\n%s\nwant the defaults and a warning that Istio's objects are forbidden", len(resp.Patch), warnings)
	}

	// An UPDATE of a Deployment injected for another revision (a private hub), whose new
	// template (a new Emissary image) arrives without the injection (a server-side apply):
	// the stored sidecar goes onto the new template.
	stableCfg, err := inject.ParseConfig([]byte("apiVersion: emissary-istio.io/v1alpha1\nkind: WebhookConfig\nhub: registry.example.com/mirror/istio\nistioVersion: 1.28.2\ndiscoveryAddress: istiod-stable.istio-system.svc:15012\n"))
	if err != nil {
		t.Fatal(err)
	}
	stored := seed.DeepCopy()
	inject.Deployment(stored, stableCfg)
	updated := seed.DeepCopy()
	updated.Spec.Template.Spec.Containers[0].Image += "-next"
	resp = postReview(t, client, url, deploymentReview(t, admissionv1.Update, updated, stored))
	if patch := string(resp.Patch); !strings.Contains(patch, "registry.example.com/mirror/istio/proxyv2:1.28.2") || strings.Contains(patch, "docker.io/istio/proxyv2") {
		t.Fatalf("UPDATE with the mesh unreadable: patch %s\nwarnings %q\nwant the stored sidecar kept", patch, resp.Warnings)
	}
}

func deploymentReview(t *testing.T, op admissionv1.Operation, obj, old *appsv1.Deployment) []byte {
	t.Helper()
	req := &admissionv1.AdmissionRequest{
		UID: types.UID("uid-" + obj.Name), Operation: op, Namespace: obj.Namespace, Name: obj.Name,
		Kind:   metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"},
		Object: runtime.RawExtension{Raw: []byte(mustJSON(t, obj))},
	}
	if old != nil {
		req.OldObject = runtime.RawExtension{Raw: []byte(mustJSON(t, old))}
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Request: req})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
