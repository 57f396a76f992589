package envtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// getMapping reads a Mapping at the given API version (v2 is the storage version).
func getMapping(t *testing.T, version, ns, name string) *unstructured.Unstructured {
	t.Helper()
	m := &unstructured.Unstructured{}
	m.SetGroupVersionKind(schema.GroupVersionKind{Group: "getambassador.io", Version: version, Kind: "Mapping"})
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mappingYAML(version, ns, name, specLines string) string {
	return "apiVersion: getambassador.io/" + version + "\nkind: Mapping\nmetadata:\n  name: " + name +
		"\n  namespace: " + ns + "\nspec:\n  prefix: /" + name + "/\n" + specLines
}

// TestMappingDefaulting is the second half of the product on the real API server with the
// real kubectl: Mappings to meshed upstreams get tls: istio-upstream and a pinned port;
// everything the user decided, or that is not meshed, is stored as applied.
func TestMappingDefaulting(t *testing.T) {
	ensureNamespace(t, "default", "istio-injection=enabled")
	ensureNamespace(t, "ambassador")
	ensureNamespace(t, "plain")
	ensureNamespace(t, "revisioned", "istio.io/rev=1-28")

	cases := []struct {
		name, version, ns, spec string
		wantTLS                 interface{} // nil: no tls stored
		wantService             string
	}{
		{"seed-v2", "v2", "default", "  service: quote\n", "istio-upstream", "quote:80"},
		{"seed-v3", "v3alpha1", "default", "  service: quote\n", "istio-upstream", "quote:80"},
		{"seed-v1", "v1", "default", "  service: quote\n", "istio-upstream", "quote:80"},
		{"cross-namespace", "v2", "ambassador", "  service: quote.default\n", "istio-upstream", "quote.default:80"},
		{"port-kept", "v3alpha1", "ambassador", "  service: quote.default:8080\n", "istio-upstream", "quote.default:8080"},
		{"fqdn", "v2", "ambassador", "  service: quote.default.svc.cluster.local\n", "istio-upstream", "quote.default.svc.cluster.local:80"},
		{"revision-label", "v2", "ambassador", "  service: api.revisioned\n", "istio-upstream", "api.revisioned:80"},
		{"unlabelled-namespace", "v2", "ambassador", "  service: web.plain\n", nil, "web.plain"},
		{"bare-name-unmeshed", "v2", "ambassador", "  service: web\n", nil, "web"},
		{"tls-true", "v2", "default", "  service: quote\n  tls: true\n", true, "quote"},
		{"tls-false", "v2", "default", "  service: quote\n  tls: false\n", false, "quote"},
		{"tls-named", "v3alpha1", "default", "  service: quote\n  tls: other-context\n", "other-context", "quote"},
		{"http-scheme", "v2", "default", "  service: http://quote\n", nil, "http://quote"},
		{"https-scheme", "v2", "default", "  service: https://quote\n", nil, "https://quote"},
		{"ip", "v2", "default", "  service: 10.0.0.7:8080\n", nil, "10.0.0.7:8080"},
		{"consul", "v2", "default", "  service: quote\n  resolver: consul-dc1\n", nil, "quote"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			manifest := mappingYAML(c.version, c.ns, c.name, c.spec)
			t.Cleanup(func() { _, _, _ = env.Kubectl(nil, "delete", "mapping", c.name, "-n", c.ns, "--ignore-not-found") })
			_, stderr, err := env.Kubectl([]byte(manifest), "apply", "-f", "-")
			if err != nil {
				t.Fatal(err)
			}
			m := getMapping(t, "v2", c.ns, c.name)
			tls, hasTLS, _ := unstructured.NestedFieldNoCopy(m.Object, "spec", "tls")
			if c.wantTLS == nil && hasTLS {
				t.Errorf("stored tls = %v, want none", tls)
			}
			if c.wantTLS != nil && tls != c.wantTLS {
				t.Errorf("stored tls = %v, want %v", tls, c.wantTLS)
			}
			if svc, _, _ := unstructured.NestedString(m.Object, "spec", "service"); svc != c.wantService {
				t.Errorf("stored service = %q, want %q", svc, c.wantService)
			}
			if c.wantTLS == "istio-upstream" && !strings.Contains(stderr, "Warning:") {
				t.Errorf("kubectl showed no warning for a defaulted Mapping; stderr:\n%s", stderr)
			}

			// Re-applying the same file is a no-op: client-side apply computes a three-way
			// patch that resets service to its port-less form, and the webhook pins it again,
			// silently: nothing the user must know changed.
			_, stderr, err = env.Kubectl([]byte(manifest), "apply", "-f", "-")
			if err != nil {
				t.Fatal(err)
			}
			if c.wantTLS == "istio-upstream" && strings.Contains(stderr, "Warning:") {
				t.Errorf("the re-apply of a defaulted Mapping warns:\n%s", stderr)
			}
			if again := getMapping(t, "v2", c.ns, c.name); again.GetGeneration() != m.GetGeneration() {
				t.Errorf("re-apply changed the Mapping: generation %d → %d", m.GetGeneration(), again.GetGeneration())
			}
			// Server-side apply: the first one takes over kubectl's fields (its last-applied
			// annotation may change), a second one changes nothing, and the spec never moves.
			ssa := func() *unstructured.Unstructured {
				t.Helper()
				_, stderr, err := env.Kubectl([]byte(manifest), "apply", "--server-side", "--force-conflicts", "-f", "-")
				if err != nil {
					t.Fatal(err)
				}
				if c.wantTLS == "istio-upstream" && strings.Contains(stderr, "Warning:") {
					t.Errorf("a server-side re-apply of a defaulted Mapping warns:\n%s", stderr)
				}
				again := getMapping(t, "v2", c.ns, c.name)
				if !equality.Semantic.DeepEqual(again.Object["spec"], m.Object["spec"]) {
					t.Fatalf("server-side apply changed the spec: %v → %v", m.Object["spec"], again.Object["spec"])
				}
				return again
			}
			first := ssa()
			if again := ssa(); again.GetGeneration() != first.GetGeneration() {
				t.Errorf("server-side re-apply changed the Mapping: generation %d → %d", first.GetGeneration(), again.GetGeneration())
			}
		})
	}
}

// TestMappingFollowsNamespaceLabel: the webhook reads namespace labels from its cache, so a
// namespace that joins the mesh is seen by the next admission.
func TestMappingFollowsNamespaceLabel(t *testing.T) {
	// A new namespace each run: this one must start outside the mesh.
	ns := fmt.Sprintf("joins-mesh-%d", time.Now().UnixNano()%1e9)
	ensureNamespace(t, ns)
	manifest := []byte(mappingYAML("v2", ns, "follows-label", "  service: api\n"))
	if _, _, err := env.Kubectl(manifest, "apply", "--dry-run=server", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	out, _, err := env.Kubectl(manifest, "apply", "--dry-run=server", "-o", "jsonpath={.spec.tls}", "-f", "-")
	if err != nil || out != "" {
		t.Fatalf("before the label: tls = %q (%v), want none", out, err)
	}
	ensureNamespace(t, ns, "istio-injection=enabled")
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _, err = env.Kubectl(manifest, "apply", "--dry-run=server", "-o", "jsonpath={.spec.tls} {.spec.service}", "-f", "-")
		if err == nil && out == "istio-upstream api:80" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after labelling the namespace: got %q (%v), want %q", out, err, "istio-upstream api:80")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
