package envtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
)

// emissaryDir is EmissaryDir, or the test fails.
func emissaryDir(t *testing.T) string {
	t.Helper()
	dir, err := EmissaryDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// emissaryChart renders Emissary's real Helm chart with the real helm, as release emissary
// in namespace ns, and returns its workloads and their ServiceAccounts (the rest needs
// Emissary's CRDs and has nothing to do with injection).
func emissaryChart(t *testing.T, ns string, values ...string) *manifests {
	t.Helper()
	return emissaryRelease(t, "emissary", ns, values...)
}

// emissaryRelease is emissaryChart for the release named release. A value that starts with
// "--" is a helm flag (--set-string=...), any other one a --set.
func emissaryRelease(t *testing.T, release, ns string, values ...string) *manifests {
	t.Helper()
	args := []string{"template", release, filepath.Join(emissaryDir(t), "charts", "emissary-ingress"),
		"--namespace", ns, "--kube-version", kubeVersion(t)}
	for _, v := range values {
		if strings.HasPrefix(v, "--") {
			args = append(args, v)
		} else {
			args = append(args, "--set", v)
		}
	}
	all := parseManifests(t, []byte(newHelm(t, nil).must(args...)))
	return parseManifests(t, all.only(t, func(u *unstructured.Unstructured) bool {
		return slices.Contains([]string{"Deployment", "DaemonSet", "Pod", "ServiceAccount"}, u.GetKind())
	}))
}

// emissaryYAML is one of Emissary's own manifests (yaml/NAME), only the objects of kind.
func emissaryYAML(t *testing.T, name, kind string) *manifests {
	t.Helper()
	all := parseManifests(t, []byte(mustRead(t, filepath.Join(emissaryDir(t), "yaml", name))))
	return parseManifests(t, all.only(t, func(u *unstructured.Unstructured) bool { return u.GetKind() == kind }))
}

// storedWorkload reads back the stored workload of kind.
func storedWorkload(t *testing.T, kind, ns, name string) inject.Workload {
	t.Helper()
	out, _, err := env.Kubectl(nil, "get", strings.ToLower(kind), name, "-n", ns, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	w, err := inject.DecodeWorkload(kind, []byte(out))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// injected reports whether w's template carries the webhook's istio-proxy, or, in
// istio-injector mode, the webhook's setup for Istio's own injector.
func injected(w inject.Workload) bool {
	t := w.Template()
	st, err := inject.ParseStatus(t)
	return err == nil && st != nil && (inject.ContainerIndex(t.Spec.Containers, inject.ProxyContainerName) >= 0 || st.Mode == inject.ModeIstioInjector)
}

// TestEmissaryChart: Emissary's own Helm chart (3.10.0), rendered by the real helm with the
// value sets users run, applied with the real kubectl: the edge is injected whatever its
// kind (Deployment, DaemonSet, bare Pod) and image name; what is not the edge, or cannot get
// the integration, is stored as applied, with a warning when the user must act; and an
// identical re-apply, client-side and server-side, is silent and changes nothing.
func TestEmissaryChart(t *testing.T) {
	cases := []struct {
		name    string
		values  []string
		kind    string // of the edge
		object  string // the edge's name
		inject  bool
		warning string // a part of the first apply's warnings
	}{
		{"deployment", nil, inject.KindDeployment, "emissary-emissary-ingress", true, "injected istio-proxy"},
		// Emissary's own CI values (ci.in/12-daemonset-values.yaml).
		{"daemonset", []string{"daemonSet=true", "deploymentStrategy.type=RollingUpdate"}, inject.KindDaemonSet, "emissary-emissary-ingress", true, "into DaemonSet chart-daemonset/"},
		{"bare-pod", []string{"barePod=true"}, inject.KindPod, "emissary-emissary-ingress", true, "into Pod chart-bare-pod/"},
		{"mirror", []string{"image.repository=registry.example.com/mirror/emissary-ingress"}, inject.KindDeployment, "emissary-emissary-ingress", true, "injected istio-proxy"},
		{"mirror-edge-stack", []string{"image.repository=mirror.example:5000/datawire/ambassador-edge-stack"}, inject.KindDeployment, "emissary-emissary-ingress", true, "injected istio-proxy"},
		{"renamed-image", []string{"image.repository=registry.example.com/platform/edge-gateway"}, inject.KindDeployment, "emissary-emissary-ingress", true, "found by its name and the label"},
		{"renamed-image-and-container", []string{"image.repository=registry.example.com/platform/edge-gateway", "containerNameOverride=gateway"}, inject.KindDeployment, "emissary-emissary-ingress", false, "no container runs an image in emissaryImages"},
		{"host-network", []string{"daemonSet=true", "hostNetwork=true", "dnsPolicy=ClusterFirstWithHostNet"}, inject.KindDaemonSet, "emissary-emissary-ingress", false, "hostNetwork"},
		{"agent", []string{"agent.enabled=true"}, inject.KindDeployment, "emissary-emissary-ingress-agent", false, ""},
		// The values of Emissary's own Istio guide (2.x/3.x), the webhook in its default sidecar
		// mode: completed for Istio's injector, not switched (checkGuideCompleted).
		{"istio-guide", []string{"--values=" + EmissaryIstioGuideValues}, inject.KindDeployment, "emissary-emissary-ingress", true,
			"found Emissary's Istio-injector setup (proxy.istio.io/config with proxyMetadata.OUTPUT_CERTS, sidecar.istio.io/userVolumeMount): completed it for Istio's own sidecar injector instead of adding the webhook's istio-proxy"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns := "chart-" + c.name
			ensureNamespace(t, ns)
			chart := emissaryChart(t, ns, c.values...)
			if !chart.has(c.kind, c.object) {
				t.Fatalf("the chart rendered no %s %s:\n%s", c.kind, c.object, chart.yaml)
			}
			_, stderr, err := env.Kubectl(chart.yaml, "apply", "-f", "-")
			if err != nil {
				t.Fatal(err)
			}
			if c.warning != "" && !strings.Contains(stderr, c.warning) {
				t.Errorf("the first apply warns\n%s\nwant a warning that says %q", stderr, c.warning)
			}
			w := storedWorkload(t, c.kind, ns, c.object)
			if injected(w) != c.inject {
				t.Fatalf("%s %s stored injected = %v, want %v:\n%+v", c.kind, c.object, injected(w), c.inject, w.Template().Spec.Containers)
			}
			if !c.inject && w.Template().Annotations[inject.AnnotationStatus] != "" {
				t.Error("status annotation on a workload that was not injected")
			}
			if c.name == "istio-guide" {
				checkGuideCompleted(t, chart, w)
			}
			for _, other := range chart.objects { // in the agent's case, the edge is there too
				kind, name := other.GetKind(), other.GetName()
				if kind != "ServiceAccount" && (kind != c.kind || name != c.object) {
					if got := injected(storedWorkload(t, kind, ns, name)); got != (name == "emissary-emissary-ingress") {
						t.Errorf("%s %s stored injected = %v", kind, name, got)
					}
				}
			}
			// The same chart again: silent, and the stored workload does not change. (The first
			// switch to server-side apply rewrites kubectl's last-applied annotation, which
			// alone bumps a Deployment's or DaemonSet's generation: compare after it.) kubectl
			// replace sends the chart's object without what the webhook added: the webhook puts
			// it back, and that changes nothing either.
			for i, args := range [][]string{{"apply"}, {"apply", "--server-side", "--force-conflicts"}, {"apply", "--server-side", "--force-conflicts"}, {"replace"}} {
				_, stderr, err := env.Kubectl(chart.yaml, append(args, "-f", "-")...)
				if err != nil {
					t.Fatal(err)
				}
				if c.inject && strings.Contains(stderr, "Warning:") {
					t.Errorf("kubectl %v of the same chart warns:\n%s", args, stderr)
				}
				again := storedWorkload(t, c.kind, ns, c.object)
				if injected(again) != c.inject || (i == 0 || i == 2) && again.GetGeneration() != w.GetGeneration() ||
					!equality.Semantic.DeepEqual(again.Template().Spec, w.Template().Spec) {
					t.Errorf("kubectl %v changed the %s: injected %v, generation %d -> %d", args, c.kind, injected(again), w.GetGeneration(), again.GetGeneration())
				}
				w = again
			}
		})
	}
}

// TestEmissaryHelpers: what shares Emissary's image (or comes with it) but is not the edge,
// from Emissary's own manifests, is stored exactly as applied: the CRD conversion webhook of
// emissary-crds.yaml (the edge's wait-for-apiext waits for it: it must not wait for Istio),
// the Consul connector and AES's injector of its documentation.
func TestEmissaryHelpers(t *testing.T) {
	for _, c := range []struct{ file, ns, name, reason string }{
		{"emissary-crds.yaml", "emissary-system", "emissary-apiext", string(inject.RoleAPIExt)},
		{"ambassador-consul-connector.yaml", "helpers", "ambassador-consul-connect-integration", string(inject.RoleConsulConnector)},
		{"ambassador-injector.yaml", "helpers", "ambassador-injector", string(inject.RoleHelper)},
	} {
		t.Run(c.name, func(t *testing.T) {
			ensureNamespace(t, c.ns)
			var in appsv1.Deployment
			d := emissaryYAML(t, c.file, "Deployment").get(t, "Deployment", c.name, &in)
			d.SetNamespace(c.ns)
			_, stderr, err := env.Kubectl(toYAML(t, d), "apply", "-f", "-")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(stderr, "Warning:") {
				t.Errorf("warnings for a helper:\n%s", stderr)
			}
			stored := storedWorkload(t, inject.KindDeployment, c.ns, c.name)
			tmpl := stored.Template()
			if injected(stored) || len(tmpl.Spec.Containers) != len(in.Spec.Template.Spec.Containers) ||
				len(tmpl.Spec.Volumes) != len(in.Spec.Template.Spec.Volumes) || len(tmpl.Annotations) != len(in.Spec.Template.Annotations) {
				t.Errorf("the helper was changed: %+v", tmpl)
			}
			// Why, in the webhook's own words (the function its handler calls).
			if res := inject.Apply(stored, env.Server.Config.Load()); res.Action != inject.Skipped || res.Reason != c.reason {
				t.Errorf("decision %s/%s, want skipped/%s: %s", res.Action, res.Reason, c.reason, res.Message)
			}
		})
	}
}

// TestEmissaryQuoteOffline is the done-criterion on Emissary's own documentation:
// its quote backend (docs/yaml/backends/quote.yaml, no namespace anywhere), given to
// `webhook inject -n default --meshed-namespaces default`, comes out with the Mapping
// defaulted, the Service and Deployment untouched, no namespace added; and the same with
// custom meshedNamespaceSelectors, whose labels --meshed-namespaces derives.
func TestEmissaryQuoteOffline(t *testing.T) {
	quote := filepath.Join(emissaryDir(t), "yaml", "quote.yaml")
	input := parseManifests(t, []byte(mustRead(t, quote)))
	check := func(t *testing.T, out string, want bool) {
		t.Helper()
		m := parseManifests(t, []byte(out))
		mp := m.get(t, "Mapping", "quote-backend", nil)
		tls, _, _ := unstructured.NestedString(mp.Object, "spec", "tls")
		svc, _, _ := unstructured.NestedString(mp.Object, "spec", "service")
		if want != (tls == "istio-upstream" && svc == "quote:80") || !want && (tls != "" || svc != "quote") {
			t.Errorf("Mapping tls %q service %q, want defaulted %v:\n%s", tls, svc, want, out)
		}
		if mp.GetNamespace() != "" {
			t.Errorf("a namespace was written into the Mapping:\n%s", out)
		}
		for _, kind := range []string{"Service", "Deployment"} {
			if got, in := m.get(t, kind, "quote", nil), input.get(t, kind, "quote", nil); !equality.Semantic.DeepEqual(got, in) {
				t.Errorf("the %s was changed:\n%s", kind, toYAML(t, got))
			}
		}
	}
	out, _ := runWebhook(t, nil, "inject", "-n", "default", "--meshed-namespaces", "default", "-f", quote)
	check(t, out, true)
	out, _ = runWebhook(t, nil, "inject", "-n", "elsewhere", "--meshed-namespaces", "default", "-f", quote)
	check(t, out, false)

	dir, configs := t.TempDir(), 0
	config := func(selectors string) string {
		configs++
		path := filepath.Join(dir, strconv.Itoa(configs)+".yaml")
		body := "apiVersion: emissary-istio.io/v1alpha1\nkind: WebhookConfig\nmapping:\n  meshedNamespaceSelectors: [" + selectors + "]\n"
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	out, _ = runWebhook(t, nil, "inject", "--config", config(`"mesh.example/member=yes"`), "-n", "default", "--meshed-namespaces", "default", "-f", quote)
	check(t, out, true)
	out, stderr := runWebhook(t, nil, "inject", "--config", config(`"istio-injection!=disabled"`), "-n", "default", "--meshed-namespaces", "default", "-f", quote)
	check(t, out, true)
	if !strings.Contains(stderr, "only negative terms") {
		t.Errorf("no note about a selector with only negative terms:\n%s", stderr)
	}
	cmd := exec.Command(webhookBinary(t), "inject", "--config", config(""), "-n", "default", "--meshed-namespaces", "default", "-f", quote)
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "Mapping defaulting is off") {
		t.Errorf("--meshed-namespaces with no selectors: %v\n%s", err, b)
	}
}

// TestEmissaryBarePodReapply: a bare Pod injected at creation keeps its istio-proxy through
// server-side re-applies of the chart (which drop what the webhook added, for it to put back)
// even after the configuration changed: a Pod's containers cannot change, so it is left as
// it is, and the user is told to re-create it.
func TestEmissaryBarePodReapply(t *testing.T) {
	ns := "chart-bare-pod-reapply"
	ensureNamespace(t, ns)
	chart := emissaryChart(t, ns, "barePod=true")
	if _, _, err := env.Kubectl(chart.yaml, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	pod := storedWorkload(t, inject.KindPod, ns, "emissary-emissary-ingress")
	if !injected(pod) {
		t.Fatal("the bare Pod was not injected")
	}
	cfg := env.Server.Config.Load()
	newCfg := *cfg
	newCfg.IstioVersion = "1.99.0"
	env.Server.Config.Store(&newCfg)
	defer env.Server.Config.Store(cfg)
	_, stderr, err := env.Kubectl(chart.yaml, "apply", "--server-side", "--force-conflicts", "-f", "-")
	if err != nil {
		t.Fatalf("re-applying the bare Pod after a configuration change: %v", err)
	}
	again := storedWorkload(t, inject.KindPod, ns, "emissary-emissary-ingress")
	proxy := again.Template().Spec.Containers[inject.ContainerIndex(again.Template().Spec.Containers, inject.ProxyContainerName)]
	if !injected(again) || proxy.Image != cfg.Image() {
		t.Errorf("the Pod's istio-proxy is now %s, want the one it was created with (%s)", proxy.Image, cfg.Image())
	}
	if !strings.Contains(stderr, "re-create") {
		t.Errorf("no warning that the Pod must be re-created:\n%s", stderr)
	}
	if err := env.Client.Delete(context.Background(), again.(inject.PodWorkload).Pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
}

// TestEmissaryBarePodCreatedWithout: a bare Pod stored without the sidecar (created while the
// webhook was out of the way) can still be updated: the webhook cannot add containers to an
// existing Pod, so it answers with no patch and tells the user to re-create it, and the API
// server accepts the update (with a patch it would refuse the user's own request).
func TestEmissaryBarePodCreatedWithout(t *testing.T) {
	ns := "chart-bare-pod-without"
	ensureNamespace(t, ns, "emissary-istio.io/webhook=disabled")
	chart := emissaryChart(t, ns, "barePod=true")
	if _, _, err := env.Kubectl(chart.yaml, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if injected(storedWorkload(t, inject.KindPod, ns, "emissary-emissary-ingress")) {
		t.Fatal("the Pod was injected in a namespace the webhook skips")
	}
	ensureNamespace(t, ns, "emissary-istio.io/webhook-")
	_, stderr, err := env.Kubectl(nil, "-n", ns, "label", "pod", "emissary-emissary-ingress", "example.com/touched=yes")
	if err != nil {
		t.Fatalf("labelling the existing Pod: %v", err)
	}
	if !strings.Contains(stderr, "re-create") {
		t.Errorf("no warning that the Pod must be re-created to get the sidecar:\n%s", stderr)
	}
	if injected(storedWorkload(t, inject.KindPod, ns, "emissary-emissary-ingress")) {
		t.Error("the existing Pod was injected")
	}
}

// checkGuideCompleted: the Deployment of Emissary's Istio guide is stored as the chart rendered
// it, with nothing of the user's changed and only what was missing added (the label that
// selects Istio's injector in any namespace), and without the webhook's istio-proxy.
func checkGuideCompleted(t *testing.T, chart *manifests, w inject.Workload) {
	t.Helper()
	var rendered appsv1.Deployment
	chart.get(t, "Deployment", "emissary-emissary-ingress", &rendered)
	tmpl, want := w.Template(), &rendered.Spec.Template
	st, err := inject.ParseStatus(tmpl)
	if err != nil || st.Mode != inject.ModeIstioInjector {
		t.Fatalf("status %+v, %v: want mode %s", st, err, inject.ModeIstioInjector)
	}
	if len(st.Volumes)+len(st.Env)+len(st.Mounts)+len(st.Annotations)+len(st.Containers)+len(st.InitContainers) > 0 || !slices.Equal(st.Labels, []string{inject.LabelIstioInject}) {
		t.Errorf("added more than the label %s: %s", inject.LabelIstioInject, st)
	}
	if got := tmpl.Labels[inject.LabelIstioInject]; got != "true" {
		t.Errorf("label %s=%q", inject.LabelIstioInject, got)
	}
	for k, v := range want.Annotations {
		if tmpl.Annotations[k] != v {
			t.Errorf("annotation %s is %q, the chart rendered %q", k, tmpl.Annotations[k], v)
		}
	}
	if len(tmpl.Spec.Containers) != len(want.Spec.Containers) || len(tmpl.Spec.InitContainers) != len(want.Spec.InitContainers) ||
		len(tmpl.Spec.Volumes) != len(want.Spec.Volumes) || len(tmpl.Spec.Containers[0].Env) != len(want.Spec.Containers[0].Env) ||
		len(tmpl.Spec.Containers[0].VolumeMounts) != len(want.Spec.Containers[0].VolumeMounts) {
		t.Errorf("the pod spec is not the chart's:\n%+v", tmpl.Spec)
	}
}
