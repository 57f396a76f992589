package envtest

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mesh"
)

// Two revisions and a tag, rendered from Istio's own istio-discovery chart by the real helm:
// stable (a private hub, 1.28.2, distroless, its own trust domain) and canary (1.29.1), tag
// prod-stable first on stable, then moved to canary by the chart's own revisionTags.
var (
	stableValues = []string{"revision=stable", "global.hub=registry.example.com/mirror/istio", "global.tag=1.28.2",
		"global.variant=distroless", "meshConfig.trustDomain=corp.example"}
	canaryValues = []string{"revision=canary", "global.hub=docker.io/istio", "global.tag=1.29.1"}
)

const (
	stableImage = "registry.example.com/mirror/istio/proxyv2:1.28.2-distroless"
	canaryImage = "docker.io/istio/proxyv2:1.29.1"
)

// applyIstio renders the chart with values and applies what the mesh view reads with kubectl.
func applyIstio(t *testing.T, values ...string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := IstioDiscoveryChart(values...)
	if err != nil {
		t.Fatal(err)
	}
	objs = IstioMeshObjects(objs)
	var stream bytes.Buffer
	for _, u := range objs {
		stream.WriteString("---\n")
		stream.Write(toYAML(t, u))
	}
	if _, stderr, err := env.Kubectl(stream.Bytes(), "apply", "-f", "-"); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	return objs
}

// waitForTag waits until the webhook's mesh view has tag pointing at rev.
func waitForTag(t *testing.T, tag, rev string) {
	t.Helper()
	eventually(t, 10*time.Second, func() (string, bool) {
		v := env.Server.Mesh.View(context.Background(), "default")
		if v.Mesh == nil {
			return "mesh view unavailable: " + v.Unavailable, false
		}
		return "the view says " + v.Mesh.Describe(), v.Mesh.Tags[tag] == rev
	})
}

func proxyEnv(t *testing.T, ns, name string) (image string, env map[string]string) {
	t.Helper()
	c := container(getDeployment(t, ns, name), inject.ProxyContainerName)
	if c == nil {
		t.Fatalf("deployment %s/%s has no istio-proxy", ns, name)
	}
	env = map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	return c.Image, env
}

// TestMeshView: an Emissary Deployment in a namespace labelled istio.io/rev=prod-stable,
// applied with kubectl and no Istio setting in the webhook's configuration, is stored with the
// serving revision's hub, tag and addresses. After the tag moves, a scale and a same-object
// re-apply leave the stored template alone; a rollout restart renders for canary.
func TestMeshView(t *testing.T) {
	ensureNamespace(t, mesh.DefaultNamespace)
	stable := applyIstio(t, append(stableValues, "revisionTags={prod-stable}")...)
	canary := applyIstio(t, canaryValues...)
	t.Cleanup(func() {
		for _, u := range append(stable, canary...) {
			_, _, _ = env.Kubectl(nil, "delete", "--ignore-not-found", strings.ToLower(u.GetKind()), u.GetName(), "-n", mesh.DefaultNamespace)
		}
		_, _, _ = env.Kubectl(nil, "delete", "--ignore-not-found", "mutatingwebhookconfiguration", "istio-revision-tag-prod-stable")
	})
	waitForTag(t, "prod-stable", "stable")

	const ns, name = "mesh-edge", "ambassador"
	ensureNamespace(t, ns, mesh.LabelRev+"=prod-stable")
	seed, err := os.ReadFile(testdata("emissary-deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	seed = bytes.ReplaceAll(seed, []byte("namespace: ambassador"), []byte("namespace: "+ns))
	if _, stderr, err := env.Kubectl(seed, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	image, pe := proxyEnv(t, ns, name)
	if image != stableImage || pe["CA_ADDR"] != "istiod-stable.istio-system.svc:15012" ||
		pe["PROXY_CONFIG"] != `{"discoveryAddress":"istiod-stable.istio-system.svc:15012"}` || pe["TRUST_DOMAIN"] != "corp.example" {
		t.Fatalf("stored istio-proxy %s with env %v: want stable's image, istiod-stable and corp.example", image, pe)
	}

	// The chart's own tag mechanism: stable without the tag, canary with it.
	if _, _, err := env.Kubectl(nil, "delete", "mutatingwebhookconfiguration", "istio-revision-tag-prod-stable"); err != nil {
		t.Fatal(err)
	}
	applyIstio(t, append(canaryValues, "revisionTags={prod-stable}")...)
	waitForTag(t, "prod-stable", "canary")

	stored := getDeployment(t, ns, name).Spec.Template
	unchanged := func(what string) {
		t.Helper()
		if now := getDeployment(t, ns, name).Spec.Template; !equality.Semantic.DeepEqual(now, stored) {
			t.Fatalf("%s changed the stored pod template after the tag moved", what)
		}
	}
	for _, step := range []struct {
		what string
		args []string
		in   []byte
	}{
		{"kubectl scale", []string{"scale", "deployment", name, "-n", ns, "--replicas=3"}, nil},
		{"a replicas patch", []string{"patch", "deployment", name, "-n", ns, "--type=merge", "-p", `{"spec":{"replicas":2}}`}, nil},
		{"a server-side re-apply of the same file", []string{"apply", "--server-side", "--force-conflicts", "-f", "-"}, seed},
	} {
		if _, stderr, err := env.Kubectl(step.in, step.args...); err != nil {
			t.Fatalf("%s: %v: %s", step.what, err, stderr)
		}
		unchanged(step.what)
	}
	// The same object, read back and replaced.
	obj, _, err := env.Kubectl(nil, "get", "deployment", name, "-n", ns, "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := env.Kubectl([]byte(obj), "replace", "-f", "-"); err != nil {
		t.Fatalf("replace: %v: %s", err, stderr)
	}
	unchanged("kubectl replace of the stored object")

	// What waits for the restart: the stored proxy talks to istiod-stable, canary serves it.
	if reasons, code := auditReasons(t, ns); !slices.Contains(reasons, inject.AuditMovedRevision) || !slices.Contains(reasons, inject.AuditOlderProxy) || code != 1 {
		t.Fatalf("audit: %v (exit %d), want %s and the notice %s", reasons, code, inject.AuditMovedRevision, inject.AuditOlderProxy)
	}

	if _, stderr, err := env.Kubectl(nil, "rollout", "restart", "deployment", name, "-n", ns); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	image, pe = proxyEnv(t, ns, name)
	if image != canaryImage || pe["CA_ADDR"] != "istiod-canary.istio-system.svc:15012" ||
		pe["PROXY_CONFIG"] != `{"discoveryAddress":"istiod-canary.istio-system.svc:15012"}` || pe["TRUST_DOMAIN"] != "cluster.local" {
		t.Fatalf("after rollout restart istio-proxy %s with env %v: want canary's", image, pe)
	}
}

// auditReasons runs `webhook audit -o json` (the webhook's configuration and Istio read from
// the cluster) and returns the reasons it gives for the objects of ns, and its exit status.
func auditReasons(t *testing.T, ns string) ([]string, int) {
	t.Helper()
	all, code := auditAll(t)
	var reasons []string
	for _, f := range all {
		if f.Namespace == ns {
			reasons = append(reasons, f.Reason)
		}
	}
	return reasons, code
}

// TestMeshAuditSkewAndUnknownRevision: a revision whose values name an older release
// (global.tag 1.27.3, a private hub) than the sidecar stored for another revision, and a
// namespace naming a revision that does not exist, each with its own reason.
func TestMeshAuditSkewAndUnknownRevision(t *testing.T) {
	ensureNamespace(t, mesh.DefaultNamespace)
	canary := applyIstio(t, canaryValues...)
	legacy := applyIstio(t, "revision=legacy", "global.hub=registry.example.com/mirror/istio", "global.tag=1.27.3")
	t.Cleanup(func() {
		for _, u := range append(canary, legacy...) {
			_, _, _ = env.Kubectl(nil, "delete", "--ignore-not-found", strings.ToLower(u.GetKind()), u.GetName(), "-n", mesh.DefaultNamespace)
		}
	})
	eventually(t, 10*time.Second, func() (string, bool) {
		v := env.Server.Mesh.View(context.Background(), "default")
		return "waiting for revision legacy in the webhook's view", v.Mesh != nil && v.Mesh.Revisions["legacy"] != nil
	})
	seed, err := os.ReadFile(testdata("emissary-deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for ns, rev := range map[string]string{"mesh-skew": "canary", "mesh-unknown": "nope"} {
		ensureNamespace(t, ns, mesh.LabelRev+"="+rev)
		_, stderr, err := env.Kubectl(bytes.ReplaceAll(seed, []byte("namespace: ambassador"), []byte("namespace: "+ns)), "apply", "-f", "-")
		if err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
		if rev == "nope" && !strings.Contains(stderr, "istio.io/rev=nope names no revision or tag") {
			t.Errorf("kubectl showed no warning about the unknown revision:\n%s", stderr)
		}
	}
	if image, _ := proxyEnv(t, "mesh-skew", "ambassador"); image != canaryImage {
		t.Fatalf("stored %s, want canary's %s", image, canaryImage)
	}
	ensureNamespace(t, "mesh-skew", mesh.LabelRev+"=legacy")
	if reasons, _ := auditReasons(t, "mesh-skew"); !slices.Contains(reasons, inject.AuditUnsupportedSkew) || !slices.Contains(reasons, inject.AuditMovedRevision) {
		t.Errorf("audit of a 1.29 sidecar under a 1.27 revision: %v, want %s and %s", reasons, inject.AuditUnsupportedSkew, inject.AuditMovedRevision)
	}
	if reasons, _ := auditReasons(t, "mesh-unknown"); !slices.Contains(reasons, inject.AuditUnknownRevision) {
		t.Errorf("audit of a namespace naming revision nope: %v, want %s", reasons, inject.AuditUnknownRevision)
	}
	// After a restart the sidecar is legacy's: exactly the image Istio's injector renders
	// for its values (test/istio compares with Istio's own ProxyImage).
	if _, stderr, err := env.Kubectl(nil, "rollout", "restart", "deployment", "ambassador", "-n", "mesh-skew"); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	if image, _ := proxyEnv(t, "mesh-skew", "ambassador"); image != "registry.example.com/mirror/istio/proxyv2:1.27.3" {
		t.Fatalf("after restart %s, want legacy's registry.example.com/mirror/istio/proxyv2:1.27.3", image)
	}
}
