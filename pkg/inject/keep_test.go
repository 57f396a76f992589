package inject

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/mesh"
)

// TestUpdatePatch: after the tag moved (prod-stable: stable -> canary), an update that leaves
// the pod template alone keeps the stored sidecar; one that changes it gets canary's.
func TestUpdatePatch(t *testing.T) {
	m := testMesh(t)
	ns := map[string]string{mesh.LabelRev: "prod-stable"}
	before, _ := DefaultConfig().ForWorkload(view(m, ns), readWorkload(t, "seed-without-proxy"))
	after, _ := DefaultConfig().ForWorkload(view(m, map[string]string{mesh.LabelRev: "canary"}), readWorkload(t, "seed-without-proxy"))

	stored := readWorkload(t, "seed-without-proxy")
	if res := Apply(stored, before); res.Reason != ReasonInjected {
		t.Fatal(res.Message)
	}
	stored = roundTrip(t, stored)
	proxyImage := func(w Workload) string {
		cs := w.Template().Spec.Containers
		if i := ContainerIndex(cs, ProxyContainerName); i >= 0 {
			return cs[i].Image
		}
		return ""
	}
	dep := func(w Workload) *appsv1.Deployment { return w.(DeploymentWorkload).Deployment }
	const stableImage, canaryImage = "registry.example.com/mirror/istio/proxyv2:1.28.2-distroless", "docker.io/istio/proxyv2:1.29.1"

	for _, tc := range []struct {
		name        string
		edit        func(w Workload)
		unavailable bool
		reason      string
		patched     bool
		image       string
	}{
		{"scale", func(w Workload) { r := int32(5); dep(w).Spec.Replicas = &r }, false, ReasonKept, false, stableImage},
		{"same-object re-apply", func(Workload) {}, false, ReasonKept, false, stableImage},
		{"server-side re-apply without the injection", func(w Workload) {
			if _, err := Strip(w.Template()); err != nil {
				t.Fatal(err)
			}
		}, false, ReasonKept, true, stableImage},
		{"rollout restart", func(w Workload) {
			w.Template().Annotations["kubectl.kubernetes.io/restartedAt"] = "2026-12-03T19:00:00Z"
		}, false, ReasonInjected, true, canaryImage},
		{"new Emissary image while the mesh is unreadable", func(w Workload) {
			w.Template().Spec.Containers[0].Image = "docker.io/datawire/aes:1.14.3"
		}, true, ReasonKept, false, stableImage},
		{"new Emissary image server-side while the mesh is unreadable", func(w Workload) {
			if _, err := Strip(w.Template()); err != nil {
				t.Fatal(err)
			}
			w.Template().Spec.Containers[0].Image = "docker.io/datawire/aes:1.14.3"
		}, true, ReasonKept, true, stableImage},
		{"opt-out", func(w Workload) { w.Template().Annotations[AnnotationInject] = "false" }, false, ReasonOptOut, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := copyWorkload(stored)
			tc.edit(w)
			res, patch, err := UpdatePatch(w, stored, after, tc.unavailable)
			if err != nil {
				t.Fatal(err)
			}
			if res.Reason != tc.reason || (patch != nil) != tc.patched {
				t.Fatalf("reason %s, patched %v (%s); want %s, %v", res.Reason, patch != nil, res.Message, tc.reason, tc.patched)
			}
			if got := proxyImage(w); got != tc.image {
				t.Fatalf("istio-proxy image %q, want %q", got, tc.image)
			}
			if tc.unavailable && w.Template().Spec.Containers[0].Image != "docker.io/datawire/aes:1.14.3" {
				t.Fatal("the user's new image was lost")
			}
			// What UpdatePatch answered is a fixed point: the next identical update changes nothing.
			again, p2, err := UpdatePatch(copyWorkload(roundTrip(t, w)), roundTrip(t, w), after, tc.unavailable)
			if err != nil || p2 != nil {
				t.Fatalf("second update: %s, patch %s, %v", again.Message, p2, err)
			}
		})
	}
}

// TestAuditMesh: a sidecar stored for stable (1.28.2) after the tag moved to canary (1.29.1)
// talks to the wrong istiod and is one release behind; an unknown tag is named.
func TestAuditMesh(t *testing.T) {
	m := testMesh(t)
	stored := readWorkload(t, "seed-without-proxy")
	stable, _ := DefaultConfig().ForWorkload(view(m, map[string]string{mesh.LabelRev: "prod-stable"}), stored)
	Apply(stored, stable)
	stored = roundTrip(t, stored)

	reasons := func(v MeshView) []string {
		cfg, _ := DefaultConfig().ForWorkload(v, stored)
		var out []string
		for _, f := range AuditMesh(stored, cfg, v) {
			if f.Message == "" {
				t.Errorf("%s without a message", f.Reason)
			}
			out = append(out, f.Reason)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		v    MeshView
		want []string
	}{
		{"still served by stable", view(m, map[string]string{mesh.LabelRev: "prod-stable"}), nil},
		{"now canary", view(m, map[string]string{mesh.LabelRev: "canary"}), []string{AuditOlderProxy, AuditMovedRevision}},
		{"unknown tag", view(m, map[string]string{mesh.LabelRev: "prod-canary"}), []string{AuditUnknownRevision}},
		{"no mesh", MeshView{Unavailable: "forbidden"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := reasons(tc.v); !slices.Equal(got, tc.want) {
				t.Fatalf("AuditMesh = %v, want %v", got, tc.want)
			}
		})
	}
}
