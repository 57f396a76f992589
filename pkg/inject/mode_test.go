package inject

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

func mustConfig(t *testing.T, yml string) *Config {
	t.Helper()
	cfg, err := ParseConfig([]byte(header + yml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Switching a stored Deployment between the modes re-renders it cleanly both ways: nothing of
// the other mode is left, and coming back gives exactly what the first render stored. Opting
// out of either gives the user's template back.
func TestModeSwitchRoundTrip(t *testing.T) {
	configs := map[Mode]*Config{
		ModeSidecar:       DefaultConfig(),
		ModeIstioInjector: mustConfig(t, "mode: istio-injector"),
	}
	native := mustConfig(t, "nativeSidecar: true")
	for _, name := range []string{"seed-without-proxy", "emissary-3x", "helm-4x", "user-conflicts", "opt-in-annotation", "native-sidecar"} {
		for _, first := range Modes {
			second := ModeIstioInjector
			if first == ModeIstioInjector {
				second = ModeSidecar
			}
			firstCfg := configs[first]
			if first == ModeSidecar && name == "native-sidecar" {
				firstCfg = native
			}
			t.Run(name+"/"+string(first), func(t *testing.T) {
				original := readWorkload(t, name)
				w := copyWorkload(original)
				if res := Apply(w, firstCfg); res.Action != Injected {
					t.Fatalf("%s: %s", first, res.Message)
				}
				stored := roundTrip(t, w)

				switched := copyWorkload(stored)
				res := Apply(switched, configs[second])
				if res.Action != Injected || !strings.HasPrefix(res.Message, "switched ") {
					t.Fatalf("to %s: %s/%s: %s", second, res.Action, res.Reason, res.Message)
				}
				checkMode(t, switched.Template(), second)

				back := roundTrip(t, switched)
				if res := Apply(back, firstCfg); res.Action != Injected {
					t.Fatalf("back to %s: %s", first, res.Message)
				}
				if !equality.Semantic.DeepEqual(back.Template(), stored.Template()) {
					t.Errorf("back to %s:\n%s\nwant:\n%s", first, toYAML(t, back.Template()), toYAML(t, stored.Template()))
				}

				back.SetAnnotations(map[string]string{AnnotationInject: "false"})
				res = Apply(back, firstCfg)
				if res.Reason != ReasonOptOut {
					t.Fatalf("opt-out: %s", res.Message)
				}
				// (The seed's own container mounts istio-certs: that volume stays, and says so.)
				if len(res.Notices) == 0 && !equality.Semantic.DeepEqual(back.Template(), original.Template()) {
					t.Errorf("after opt-out:\n%s\nwant:\n%s", toYAML(t, back.Template()), toYAML(t, original.Template()))
				}
			})
		}
	}
}

// checkMode: t is rendered for mode and nothing of the other is left: the webhook's proxy and
// Istio's "false" in sidecar mode, the label that selects Istio's injector and no proxy of the
// webhook's in istio-injector mode.
func checkMode(t *testing.T, tmpl *corev1.PodTemplateSpec, mode Mode) {
	t.Helper()
	st, err := ParseStatus(tmpl)
	if err != nil || st == nil {
		t.Fatalf("status: %v %v", st, err)
	}
	sidecar := mode == ModeSidecar
	if got := st.Mode == ModeIstioInjector; got == sidecar {
		t.Errorf("status mode %q, want %s", st.Mode, mode)
	}
	if got := hasProxy(&tmpl.Spec); got != sidecar {
		t.Errorf("%s: has the webhook's %s = %v", mode, ProxyContainerName, got)
	}
	if got := tmpl.Labels[LabelIstioInject] == "true"; got == sidecar {
		t.Errorf("%s: label %s=%q", mode, LabelIstioInject, tmpl.Labels[LabelIstioInject])
	}
	// In istio-injector mode the user's annotation that says no may stay: Istio reads the label.
	if sidecar && tmpl.Annotations[AnnotationIstioInject] != "false" {
		t.Errorf("%s: annotation %s=%q", mode, AnnotationIstioInject, tmpl.Annotations[AnnotationIstioInject])
	}
	if _, got := tmpl.Annotations[AnnotationProxyConfig]; got == sidecar {
		t.Errorf("%s: annotation %s present = %v", mode, AnnotationProxyConfig, got)
	}
}

// In istio-injector mode only the revision shapes what is written: a new proxy image or any
// other proxy setting leaves the Deployment alone (no rollout for nothing), a revision does not.
func TestIstioInjectorReRendersOnlyForRevision(t *testing.T) {
	w := readWorkload(t, "helm-4x")
	Apply(w, mustConfig(t, "mode: istio-injector"))
	for _, tc := range []struct {
		yml      string
		reRender bool
	}{
		{"mode: istio-injector\nistioVersion: 1.28.0\nhub: gcr.io/istio-release\nproxyRunAsUser: 1337\nnativeSidecar: true", false},
		{"mode: istio-injector\nrevision: canary", true},
	} {
		res := Apply(roundTrip(t, w), mustConfig(t, tc.yml))
		if res.Changed() != tc.reRender {
			t.Errorf("%q: %s: %s", tc.yml, res.Action, res.Message)
		}
	}
}

func TestModeConfig(t *testing.T) {
	for _, tc := range []struct{ yml, want string }{
		{"mode: istio", `mode: must be one of sidecar, istio-injector, got "istio"`},
		{"mode: istio-injector\nistioVersion: 1.9.4", "mode: istio-injector needs Istio 1.10 or later (istioVersion is 1.9.4)"},
		{"mode: Sidecar", `mode: must be one of`},
	} {
		if _, err := ParseConfig([]byte(header + tc.yml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.yml, err, tc.want)
		}
	}
	if cfg := mustConfig(t, "mode: istio-injector\nistioVersion: 1.10.0"); cfg.Mode != ModeIstioInjector {
		t.Errorf("mode %s", cfg.Mode)
	}
	if DefaultConfig().Mode != ModeSidecar || DefaultConfig().NativeSidecar {
		t.Error("the default is the seed's: sidecar mode, a regular container")
	}
}

// Turning nativeSidecar on moves the webhook's istio-proxy to the init containers on the next
// admission, and turning it off moves it back to exactly where it was.
func TestNativeSidecarToggle(t *testing.T) {
	w := readWorkload(t, "seed-without-proxy")
	Apply(w, DefaultConfig())
	regular := roundTrip(t, w)

	native := copyWorkload(regular)
	if res := Apply(native, mustConfig(t, "nativeSidecar: true")); !res.Changed() || !strings.HasPrefix(res.Message, "updated ") {
		t.Fatalf("nativeSidecar on: %s", res.Message)
	}
	spec := native.Template().Spec
	if ContainerIndex(spec.Containers, ProxyContainerName) >= 0 || ContainerIndex(spec.InitContainers, ProxyContainerName) < 0 {
		t.Fatalf("istio-proxy not moved to the init containers: %d containers, %d init containers", len(spec.Containers), len(spec.InitContainers))
	}
	// Back, through the patch the webhook answers with: it removes the init containers.
	_, out := patched(t, DefaultConfig(), KindDeployment, toJSON(t, object(native)))
	back, err := DecodeWorkload(KindDeployment, out)
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(back.Template(), regular.Template()) {
		t.Errorf("after nativeSidecar off:\n%s\nwant:\n%s", toYAML(t, back.Template()), toYAML(t, regular.Template()))
	}
}
