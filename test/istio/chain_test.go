package istio

import (
	"context"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
)

// chainTimeout bounds TestDeploymentToPodChain: istiod with its injector registered and the
// controller manager, then for each case the Pod and the agent's certificates.
const chainTimeout = 2 * time.Minute

// TestDeploymentToPodChain is the whole chain on a real control plane: kubectl applies an
// Emissary Deployment through this webhook; the real kube-controller-manager makes a
// ReplicaSet and a Pod of it, and the Pod goes through Istio's own sidecar injector (istiod's
// webhook, registered from Istio's chart) as in a cluster. Asserted on the Pod the API server
// stored: in sidecar mode the webhook's istio-proxy, and Istio, asked, stays out; in
// istio-injector mode Istio's istio-proxy (from the revision the webhook's metadata selects),
// steered by the webhook's pod metadata. Then a real pilot-agent runs as the stored Pod's
// istio-proxy and the certificates land where Emissary reads them.
func TestDeploymentToPodChain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), chainTimeout)
	defer cancel()
	// Two istiods with their injectors, as in a revision-based install: the default one, which
	// istio-injection=enabled namespaces select, and istiod-canary, which pods select by label.
	// Istio decides whether its proxy is a native sidecar: the default one is told not to (as
	// on nodes older than Kubernetes 1.33), canary decides by itself (native, with no node to
	// say otherwise), so both shapes of Istio's proxy are run.
	istiods := map[string]*Istiod{}
	for rev, istiodEnv := range map[string][]string{"default": {"ENABLE_NATIVE_SIDECARS=false"}, "canary": nil} {
		d, err := StartIstiod(ctx, env, bin, filepath.Join(t.TempDir(), "istiod-"+rev), IstiodOptions{Revision: rev, Injector: true, Env: istiodEnv})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Stop()
		istiods[rev] = d
	}
	kcm, err := env.StartControllerManager("deployment-controller", "replicaset-controller")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := kcm.Stop(); err != nil {
			t.Error(err)
		}
	}()

	meshed := map[string]string{"istio-injection": "enabled"}
	for _, tc := range []struct {
		name     string
		config   string // webhook configuration keys
		manifest string
		nsLabels map[string]string
		revision string // the istiod that must be asked to inject
		istio    bool   // Istio's injector renders istio-proxy, else the webhook does
	}{
		{"sidecar mode", "", seedFile, meshed, "default", false},
		{"sidecar mode native", "nativeSidecar: true", seedFile, meshed, "default", false},
		{"istio-injector mode", "mode: istio-injector", seedFile, meshed, "default", true},
		// No namespace label: the pod's own labels select istiod-canary's injector.
		{"istio-injector mode revision", "mode: istio-injector\nrevision: canary", seedFile, nil, "canary", true},
		// Emissary's own chart with its Istio guide's values, the webhook in its default mode:
		// completed for Istio's injector.
		{"Emissary's guide completed", "", emissaryGuideDeployment(t), meshed, "default", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			useConfig(t, tc.config)
			ns := "chain-" + strings.ToLower(strings.NewReplacer(" ", "-", "'", "").Replace(tc.name))
			d, warnings := applyEmissary(t, tc.manifest, ns, tc.nsLabels)
			t.Logf("kubectl apply: %s", warnings)
			pod := waitForPod(ctx, t, kcm, d)
			istiod := istiods[tc.revision]
			if !istiod.InjectionRequested(ns) {
				t.Errorf("the API server did not ask istiod %s's injector about the Pod in %s", tc.revision, ns)
			}
			if tc.istio {
				checkIstioInjected(t, pod, tc.revision)
			} else {
				checkWebhookInjected(t, pod)
			}
			agent := startAgent(t, ctx, t.TempDir(), pod, istiod)
			agent.checkCertificates(ctx, "cluster.local")
			agent.checkFlagsRead()
		})
	}
}

// emissaryGuideDeployment renders Emissary's real chart (`make emissary`) with the real helm
// and the values of Emissary's own Istio guide, and returns a file with its Deployment.
func emissaryGuideDeployment(t *testing.T) string {
	t.Helper()
	dir, err := envtest.EmissaryDir()
	if err != nil {
		t.Fatal(err)
	}
	out, err := envtest.Helm(t.TempDir(), nil, "template", "emissary", filepath.Join(dir, "charts", "emissary-ingress"),
		"--namespace", "emissary", "--values", envtest.EmissaryIstioGuideValues)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := envtest.ParseObjects([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			b, err := o.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "emissary.json")
			if err := os.WriteFile(file, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return file
		}
	}
	t.Fatalf("Emissary's chart rendered no Deployment:\n%s", out)
	return ""
}

// waitForPod is the first Pod the controllers make of d, as the API server stored it.
func waitForPod(ctx context.Context, t *testing.T, kcm *envtest.ControllerManager, d *appsv1.Deployment) *corev1.Pod {
	t.Helper()
	selector, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	pods := &corev1.PodList{}
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		err := env.Client.List(ctx, pods, client.InNamespace(d.Namespace), client.MatchingLabelsSelector{Selector: selector})
		return err == nil && len(pods.Items) > 0, kcm.Exited()
	})
	if err != nil {
		events, _, _ := env.Kubectl(nil, "-n", d.Namespace, "get", "events")
		t.Fatalf("no Pod of Deployment %s/%s: %v\n--- events:\n%s\n--- kube-controller-manager:\n%s", d.Namespace, d.Name, err, events, kcm.Log(3000))
	}
	return &pods.Items[0]
}

// checkWebhookInjected: the Pod has the webhook's istio-proxy, the one its status names, and
// nothing of Istio's injector (which was called: the namespace is labelled for it).
func checkWebhookInjected(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	st, err := inject.ParseStatus(&corev1.PodTemplateSpec{ObjectMeta: pod.ObjectMeta})
	if err != nil || st == nil || !slices.Contains(append(st.Containers, st.InitContainers...), inject.ProxyContainerName) {
		t.Fatalf("the Pod's status annotation does not name the webhook's %s: %+v %v", inject.ProxyContainerName, st, err)
	}
	// A native sidecar: the last init container, which the kubelet keeps running and starts
	// Emissary after once its startup probe passes.
	if slices.Contains(st.InitContainers, inject.ProxyContainerName) {
		inits := pod.Spec.InitContainers
		if last := inits[len(inits)-1]; last.Name != inject.ProxyContainerName || last.RestartPolicy == nil ||
			*last.RestartPolicy != corev1.ContainerRestartPolicyAlways || last.StartupProbe == nil {
			t.Errorf("the native sidecar is not the last init container with restartPolicy Always and a startup probe: %+v", last)
		}
	}
	if v, ok := pod.Annotations[istioStatusAnnotation]; ok {
		t.Errorf("Istio's injector injected the Pod too: %s=%s", istioStatusAnnotation, v)
	}
	if n := countContainers(pod, inject.ProxyContainerName); n != 1 {
		t.Errorf("%d %s containers, want the webhook's only", n, inject.ProxyContainerName)
	}
	if c := podContainer(pod, "istio-init"); c != nil {
		t.Errorf("Istio's istio-init is in the Pod: %v", c.Args)
	}
}

// istioStatusAnnotation is what Istio's injector records on a Pod it injected.
const istioStatusAnnotation = "sidecar.istio.io/status"

// checkIstioInjected: the Pod has Istio's istio-proxy from revision (native sidecar or not, as
// that Istio decides), writing certificates (OUTPUT_CERTS in its proxy configuration) into the
// istio-certs volume that the Emissary container mounts too, and Istio intercepts none of
// Emissary's traffic.
func checkIstioInjected(t *testing.T, pod *corev1.Pod, revision string) {
	t.Helper()
	if _, ok := pod.Annotations[istioStatusAnnotation]; !ok {
		t.Fatalf("Istio's injector did not inject the Pod (no %s); annotations %v", istioStatusAnnotation, pod.Annotations)
	}
	if got := pod.Annotations["istio.io/rev"]; got != revision {
		t.Errorf("injected by istiod revision %q, want %q", got, revision)
	}
	if n := countContainers(pod, inject.ProxyContainerName); n != 1 {
		t.Fatalf("%d %s containers, want Istio's only", n, inject.ProxyContainerName)
	}
	proxy := podContainer(pod, inject.ProxyContainerName)
	native := slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == inject.ProxyContainerName })
	t.Logf("Istio injected %s (native sidecar: %v, image %s)", inject.ProxyContainerName, native, proxy.Image)
	if native != (revision == "canary") { // see TestDeploymentToPodChain
		t.Errorf("istiod %s made istio-proxy a native sidecar = %v", revision, native)
	}

	var proxyConfig struct {
		ProxyMetadata map[string]string `json:"proxyMetadata"`
	}
	if err := json.Unmarshal([]byte(envValue(proxy, "PROXY_CONFIG")), &proxyConfig); err != nil {
		t.Errorf("PROXY_CONFIG: %v", err)
	}
	if got := proxyConfig.ProxyMetadata["OUTPUT_CERTS"]; path.Clean(got) != "/etc/istio-certs" {
		t.Errorf("PROXY_CONFIG's proxyMetadata.OUTPUT_CERTS is %q, want /etc/istio-certs", got)
	}
	if got := envValue(proxy, "OUTPUT_CERTS"); path.Clean(got) != "/etc/istio-certs" {
		t.Errorf("the proxy's OUTPUT_CERTS is %q, want /etc/istio-certs", got)
	}
	for _, c := range pod.Spec.Containers {
		if c.Name != inject.ProxyContainerName && envValue(&c, "AMBASSADOR_ISTIO_SECRET_DIR") != "" {
			if got := volumeMountedAt(t, &c, "/etc/istio-certs"); got != "istio-certs" {
				t.Errorf("container %s mounts %s at /etc/istio-certs", c.Name, got)
			}
		}
	}
	if got := volumeMountedAt(t, proxy, "/etc/istio-certs"); got != "istio-certs" {
		t.Errorf("the proxy mounts %s at /etc/istio-certs", got)
	}

	// No interception: istio-init's iptables rules include no inbound port (-b) and no outbound
	// range (-i).
	init := podContainer(pod, "istio-init")
	if init == nil {
		t.Fatal("no istio-init container: cannot tell what Istio intercepts")
	}
	for _, flag := range []string{"-b", "-i"} {
		if i := slices.Index(init.Args, flag); i < 0 || i+1 >= len(init.Args) || init.Args[i+1] != "" {
			t.Errorf("istio-init %s is not empty: %q", flag, init.Args)
		}
	}
}

func countContainers(pod *corev1.Pod, name string) int {
	n := 0
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		if c.Name == name {
			n++
		}
	}
	return n
}

// envValue is the literal value of c's env var name ("" when unset or a reference).
func envValue(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}
