package inject

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func parse(t *testing.T, keys string) *Config {
	t.Helper()
	cfg, err := ParseConfig([]byte(header + keys))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestExistingPodIsNeverInjected: an UPDATE of a bare Pod that was created without the sidecar
// (before the webhook, or during an outage) gets no patch: the API server refuses new
// containers in an existing Pod, so a patch would fail the user's own update (kubectl label,
// helm upgrade). A CREATE of the same Pod is injected.
func TestExistingPodIsNeverInjected(t *testing.T) {
	for _, mode := range []string{"mode: sidecar", "mode: istio-injector"} {
		t.Run(mode, func(t *testing.T) {
			w := readWorkload(t, "chart-bare-pod")
			w.SetUID("9b2a5c3e-0000-4000-8000-000000000001") // stored: only an UPDATE carries it
			res, patch, err := WorkloadPatch(w, parse(t, mode))
			if err != nil || patch != nil || res.Action != Skipped || res.Reason != ReasonPodImmutable {
				t.Fatalf("got %s/%s, patch %s, %v: want skipped, pod-immutable, no patch", res.Action, res.Reason, patch, err)
			}
			if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "re-create") {
				t.Errorf("warnings %q: want one saying to re-create the Pod", res.Warnings)
			}
			if res, _, _ := WorkloadPatch(readWorkload(t, "chart-bare-pod"), parse(t, mode)); res.Action != Injected {
				t.Errorf("the same Pod at CREATE: %s/%s, want injected", res.Action, res.Reason)
			}
		})
	}
}

// TestIstioInjectedPodIsNotHandWritten: in istio-injector mode a bare Pod gets Istio's own
// istio-proxy right after the webhook's metadata; an update of that Pod is up to date, not
// "a hand-written integration" to remove.
func TestIstioInjectedPodIsNotHandWritten(t *testing.T) {
	cfg := parse(t, "mode: istio-injector")
	w := readWorkload(t, "chart-bare-pod")
	if res := Apply(w, cfg); res.Action != Injected {
		t.Fatalf("CREATE: %s/%s", res.Action, res.Reason)
	}
	// What Istio's injector adds, as the API server then stores the Pod.
	pod := w.(PodWorkload)
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: ProxyContainerName, Image: "docker.io/istio/proxyv2:1.29.1"})
	pod.SetUID("9b2a5c3e-0000-4000-8000-000000000002")
	res := Apply(w, cfg)
	if res.Action != UpToDate || len(res.Warnings) != 0 {
		t.Errorf("UPDATE of the injected Pod: %s/%s, warnings %q: want up to date and silent", res.Action, res.Reason, res.Warnings)
	}
}

// TestAuditInEveryMode: audit tells a configuration change from a hand edit whatever the mode
// the workload was injected in.
func TestAuditInEveryMode(t *testing.T) {
	for _, tc := range []struct {
		config, changed string                        // the configuration injected with; one changed later
		edit            func(*corev1.PodTemplateSpec) // a hand edit of what the webhook stored
	}{
		{"", "istioVersion: 1.29.0", editProxyImage},
		{"nativeSidecar: true", "nativeSidecar: true\nistioVersion: 1.29.0", editProxyImage},
		{"mode: istio-injector", "mode: istio-injector\nrevision: canary", func(t *corev1.PodTemplateSpec) {
			t.Annotations[AnnotationProxyConfig] = "{}"
		}},
	} {
		t.Run(tc.config, func(t *testing.T) {
			cfg := parse(t, tc.config)
			w := readWorkload(t, "seed-without-proxy")
			if res := Apply(w, cfg); res.Action != Injected {
				t.Fatalf("%s/%s", res.Action, res.Reason)
			}
			if f, found := Audit(w, parse(t, tc.changed)); f.Reason != AuditStaleConfig {
				t.Errorf("after a configuration change: %+v (found %v), want %s", f, found, AuditStaleConfig)
			}
			tc.edit(w.Template())
			if f, found := Audit(w, cfg); f.Reason != AuditModified {
				t.Errorf("after a hand edit: %+v (found %v), want %s", f, found, AuditModified)
			}
		})
	}
}

func editProxyImage(t *corev1.PodTemplateSpec) {
	for _, cs := range [][]corev1.Container{t.Spec.Containers, t.Spec.InitContainers} {
		for i := range cs {
			if cs[i].Name == ProxyContainerName {
				cs[i].Image = "example.com/proxyv2:edited"
			}
		}
	}
}
