package envtest

import (
	"context"
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
)

// TestInjectedPodSecurity pins down, with the API server's own Pod Security admission, the
// level of the Emissary pod the webhook produces (docs/security.md states it):
//   - the seed's Emissary pod with the sidecar injected is "baseline", whatever proxyRunAsUser;
//   - it is not "restricted": with the default proxyRunAsUser 0, istio-proxy runs as root,
//     which restricted forbids; proxyRunAsUser 1337 removes that violation, and what is left
//     comes from the seed's own container and from the securityContext the sidecar does not
//     set (allowPrivilegeEscalation, capabilities), listed below.
func TestInjectedPodSecurity(t *testing.T) {
	ensureNamespace(t, "pss-baseline", "pod-security.kubernetes.io/enforce=baseline")
	ensureNamespace(t, "pss-restricted", "pod-security.kubernetes.io/enforce=restricted")
	raw, err := os.ReadFile(testdata("emissary-deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	seed := &appsv1.Deployment{}
	if err := yaml.UnmarshalStrict(raw, seed); err != nil {
		t.Fatal(err)
	}

	pod := func(runAsUser int64) *corev1.Pod {
		t.Helper()
		cfg := inject.DefaultConfig()
		cfg.ProxyRunAsUser = ptr.To(runAsUser)
		d := seed.DeepCopy()
		if res := inject.Deployment(d, cfg); !res.Changed() {
			t.Fatalf("seed not injected: %s", res.Message)
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "emissary", Labels: d.Spec.Template.Labels,
			Annotations: d.Spec.Template.Annotations}, Spec: d.Spec.Template.Spec}
	}
	admit := func(ns string, p *corev1.Pod) error {
		p = p.DeepCopy()
		p.Namespace = ns
		return env.Client.Create(context.Background(), p, client.DryRunAll)
	}

	for _, c := range []struct {
		name      string
		runAsUser int64
		// violations the restricted level must report, and must not
		want, notWant []string
	}{
		{"seed default, istio-proxy as root", 0,
			[]string{`runAsUser=0 (container "istio-proxy" must not set runAsUser=0)`,
				`allowPrivilegeEscalation != false (container "istio-proxy"`,
				`unrestricted capabilities (containers "aes", "istio-proxy"`}, nil},
		{"proxyRunAsUser 1337", 1337,
			[]string{`allowPrivilegeEscalation != false (container "istio-proxy"`,
				`unrestricted capabilities (containers "aes", "istio-proxy"`},
			[]string{"runAsUser=0"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := pod(c.runAsUser)
			if err := admit("pss-baseline", p); err != nil {
				t.Errorf("not baseline: %v", err)
			}
			err := admit("pss-restricted", p)
			if err == nil {
				t.Fatal("admitted at restricted; docs/security.md says it is not")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("restricted does not report %q:\n%v", w, err)
				}
			}
			for _, w := range c.notWant {
				if strings.Contains(err.Error(), w) {
					t.Errorf("restricted reports %q:\n%v", w, err)
				}
			}
			t.Logf("restricted: %v", err)
		})
	}
}
