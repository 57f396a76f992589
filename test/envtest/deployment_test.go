package envtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
)

func testdata(name string) string {
	return filepath.Join(RepoRoot(), "test", "envtest", "testdata", name)
}

// ensureNamespace creates ns with labels (kubectl), tolerating one that exists.
func ensureNamespace(t *testing.T, ns string, labels ...string) {
	t.Helper()
	if _, _, err := env.Kubectl(nil, "get", "namespace", ns); err != nil {
		if _, _, err := env.Kubectl(nil, "create", "namespace", ns); err != nil {
			t.Fatal(err)
		}
	}
	if len(labels) > 0 {
		if _, _, err := env.Kubectl(nil, append([]string{"label", "namespace", ns, "--overwrite"}, labels...)...); err != nil {
			t.Fatal(err)
		}
	}
}

func getDeployment(t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
		t.Fatal(err)
	}
	return d
}

func countContainers(d *appsv1.Deployment, name string) int {
	n := 0
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == name {
			n++
		}
	}
	return n
}

func container(d *appsv1.Deployment, name string) *corev1.Container {
	for i := range d.Spec.Template.Spec.Containers {
		if d.Spec.Template.Spec.Containers[i].Name == name {
			return &d.Spec.Template.Spec.Containers[i]
		}
	}
	return nil
}

func countEnv(c *corev1.Container, name string) int {
	n := 0
	for _, e := range c.Env {
		if e.Name == name {
			n++
		}
	}
	return n
}

// TestApplySeedDeployment is the first half of the product, end to end: the operator applies
// the stock Emissary Deployment with kubectl and the cluster stores the integrated one; the
// same apply again (client-side and server-side) changes nothing; a new Istio version in the
// config is kept out of a re-apply and rendered by the next rollout restart.
func TestApplySeedDeployment(t *testing.T) {
	ensureNamespace(t, "ambassador")
	seed := testdata("seed-emissary.yaml")
	t.Cleanup(func() { _, _, _ = env.Kubectl(nil, "delete", "-f", seed, "--ignore-not-found") })

	_, stderr, err := env.Kubectl(nil, "apply", "-f", seed)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "Warning: injected istio-proxy") {
		t.Errorf("kubectl did not show the injection warning; stderr:\n%s", stderr)
	}
	d := getDeployment(t, "ambassador", "ambassador")
	cfg := inject.DefaultConfig()
	assertInjected(t, d, cfg.Image())

	// Re-applying changes nothing: not with client-side apply, and not with server-side
	// apply. (The first switch to --server-side rewrites kubectl's last-applied annotation on
	// the Deployment, which bumps its generation by itself; the pod template must not move.)
	applyAgain := func(args ...string) *appsv1.Deployment {
		t.Helper()
		if _, _, err := env.Kubectl(nil, append(args, "-f", seed)...); err != nil {
			t.Fatal(err)
		}
		again := getDeployment(t, "ambassador", "ambassador")
		assertInjected(t, again, cfg.Image())
		if !equality.Semantic.DeepEqual(again.Spec, d.Spec) {
			t.Fatalf("kubectl %v changed the Deployment's spec", args)
		}
		return again
	}
	if again := applyAgain("apply"); again.Generation != d.Generation {
		t.Fatalf("client-side re-apply: generation %d → %d", d.Generation, again.Generation)
	}
	first := applyAgain("apply", "--server-side", "--force-conflicts")
	if again := applyAgain("apply", "--server-side", "--force-conflicts"); again.Generation != first.Generation {
		t.Fatalf("server-side re-apply: generation %d → %d", first.Generation, again.Generation)
	}
	generation := first.Generation

	// A new Istio release in the configuration: a re-apply of the same file keeps the stored
	// sidecar (no surprise rollout of the edge); the next rollout renders the new one.
	newCfg := inject.DefaultConfig()
	newCfg.IstioVersion = "1.99.0"
	env.Server.Config.Store(newCfg)
	defer env.Server.Config.Store(cfg)
	if again := applyAgain("apply", "--server-side", "--force-conflicts"); again.Generation != generation {
		t.Fatalf("re-apply after a configuration change: generation %d → %d", generation, again.Generation)
	}
	if _, _, err := env.Kubectl(nil, "rollout", "restart", "deployment", "ambassador", "-n", "ambassador"); err != nil {
		t.Fatal(err)
	}
	upgraded := getDeployment(t, "ambassador", "ambassador")
	assertInjected(t, upgraded, newCfg.Image())
	if upgraded.Generation != generation+1 {
		t.Errorf("generation after the restart = %d, want %d", upgraded.Generation, generation+1)
	}
}

func assertInjected(t *testing.T, d *appsv1.Deployment, image string) {
	t.Helper()
	if n := countContainers(d, inject.ProxyContainerName); n != 1 {
		t.Fatalf("stored Deployment has %d istio-proxy containers, want 1", n)
	}
	proxy := container(d, inject.ProxyContainerName)
	if proxy.Image != image {
		t.Errorf("istio-proxy image = %s, want %s", proxy.Image, image)
	}
	aes := container(d, "aes")
	for _, name := range []string{"AMBASSADOR_ISTIO_SECRET_DIR", "AMBASSADOR_ENVOY_BASE_ID"} {
		if n := countEnv(aes, name); n != 1 {
			t.Errorf("aes has %d %s env vars, want 1", n, name)
		}
	}
	want := map[string]bool{"istio-certs": false, "istiod-ca-cert": false, "istio-envoy": false, "istio-token": false}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if seen, ok := want[v.Name]; ok {
			if seen {
				t.Errorf("volume %s appears twice", v.Name)
			}
			want[v.Name] = true
		}
	}
	for name, seen := range want {
		if !seen {
			t.Errorf("volume %s missing", name)
		}
	}
	ann := d.Spec.Template.Annotations
	if ann[inject.AnnotationIstioInject] != "false" || ann[inject.AnnotationStatus] == "" {
		t.Errorf("pod template annotations = %v", ann)
	}
}

// TestServerDryRunShowsInjection: `kubectl apply --dry-run=server` prints the injected
// Deployment and stores nothing.
func TestServerDryRunShowsInjection(t *testing.T) {
	ensureNamespace(t, "dry-run")
	manifest := strings.ReplaceAll(mustRead(t, testdata("seed-emissary.yaml")), "namespace: ambassador", "namespace: dry-run")
	out, _, err := env.Kubectl([]byte(manifest), "apply", "--dry-run=server", "-o", "yaml", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := yaml.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	assertInjected(t, &d, inject.DefaultConfig().Image())
	if _, _, err := env.Kubectl(nil, "get", "deployment", "ambassador", "-n", "dry-run"); err == nil {
		t.Fatal("a server-side dry run stored the Deployment")
	}
}

// TestNonEmissaryDeploymentUnchanged: a Deployment that is not Emissary is stored exactly as
// applied (the matchConditions keep it from the webhook; the handler would skip it too).
func TestNonEmissaryDeploymentUnchanged(t *testing.T) {
	manifest := `apiVersion: apps/v1
kind: Deployment
metadata: {name: nginx, namespace: default}
spec:
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      containers:
      - name: nginx
        image: docker.io/library/nginx:1.27
`
	if _, _, err := env.Kubectl([]byte(manifest), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	stored := getDeployment(t, "default", "nginx")
	dryRun := &appsv1.Deployment{}
	if err := yaml.Unmarshal([]byte(manifest), dryRun); err != nil {
		t.Fatal(err)
	}
	dryRun.Name = "nginx-dry-run"
	if err := env.Client.Create(context.Background(), dryRun, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	// The stored template equals what the API server alone makes of the manifest.
	dryRun.Spec.Template.Name = stored.Spec.Template.Name
	if !equality.Semantic.DeepEqual(stored.Spec.Template, dryRun.Spec.Template) {
		t.Fatalf("non-Emissary Deployment was changed:\nstored: %+v\nplain:  %+v", stored.Spec.Template, dryRun.Spec.Template)
	}
	if len(stored.Spec.Template.Annotations) != 0 {
		t.Fatalf("annotations added to a non-Emissary Deployment: %v", stored.Spec.Template.Annotations)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestHandWrittenIntegrationLeftAlone: the seed's own YAML, with its hand-written
// istio-proxy, is stored as applied, and kubectl shows why.
func TestHandWrittenIntegrationLeftAlone(t *testing.T) {
	ensureNamespace(t, "hand-written")
	manifest := strings.ReplaceAll(mustRead(t, filepath.Join(RepoRoot(), "pkg", "inject", "testdata", "seed-hand-written.yaml")),
		"namespace: ambassador", "namespace: hand-written")
	_, stderr, err := env.Kubectl([]byte(manifest), "apply", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "hand-written integration") {
		t.Errorf("kubectl showed no warning about the hand-written sidecar; stderr:\n%s", stderr)
	}
	d := getDeployment(t, "hand-written", "ambassador")
	if n := countContainers(d, inject.ProxyContainerName); n != 1 {
		t.Fatalf("%d istio-proxy containers, want the user's one", n)
	}
	if _, ok := d.Spec.Template.Annotations[inject.AnnotationStatus]; ok {
		t.Error("the webhook recorded an injection it did not do")
	}
	if img := container(d, inject.ProxyContainerName).Image; img != "istio/proxyv2:{{ISTIO_VERSION}}" {
		t.Errorf("the user's sidecar image was changed to %s", img)
	}
}
