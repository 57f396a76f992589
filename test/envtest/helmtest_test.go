package envtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/test/kubelet"
)

// selftestPod is the name of the chart's `helm test` Pod for the tests' release.
const selftestPod = releaseName + "-selftest"

// helmTest runs the real `helm test` against e while the test plays the kubelet for the one
// Pod it creates (no kubelet runs here): the Pod's container, `webhook selftest` built from
// cmd/webhook, runs with the Pod's view of the world (test/kubelet: its volumes, its service
// account's token from the TokenRequest API, its env and args as the kubelet resolves them,
// its own network namespace in which the kubernetes Service's address leads to the API
// server), and its exit code becomes the Pod's phase, which is what helm waits for. It
// returns the container's output and helm's error.
func helmTest(t *testing.T, e *Env, h *helmCmd) (logs string, helmErr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A Pod a previous `helm test` left: helm deletes it first (before-hook-creation).
	old := &corev1.Pod{}
	var oldUID types.UID
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: selftestPod}, old); err == nil {
		oldUID = old.UID
	}
	done := make(chan error, 1)
	go func() {
		_, err := h.run("test", releaseName, "--namespace", releaseNamespace, "--timeout", "90s")
		done <- err
	}()

	pod := &corev1.Pod{}
	for {
		err := e.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: selftestPod}, pod)
		if err == nil && pod.UID != oldUID && pod.DeletionTimestamp == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("helm test ended before its Pod was created: %v", err)
		case <-ctx.Done():
			t.Fatalf("no %s Pod from helm test: %v", selftestPod, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	out := &LockedBuffer{}
	code := runPod(t, ctx, e, pod, out)
	pod.Status.Phase = corev1.PodSucceeded
	if code != 0 {
		pod.Status.Phase = corev1.PodFailed
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: pod.Spec.Containers[0].Name, Image: pod.Spec.Containers[0].Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: int32(code)}}}}
	if err := e.Client.Status().Update(ctx, pod); err != nil {
		t.Fatalf("setting the Pod's phase: %v", err)
	}
	select {
	case err := <-done:
		return out.String(), err
	case <-ctx.Done():
		t.Fatalf("helm test did not end after its Pod did")
	}
	return "", nil
}

// runPod runs pod's one container as the kubelet would, and returns its exit code.
func runPod(t *testing.T, ctx context.Context, e *Env, pod *corev1.Pod, out *LockedBuffer) int {
	t.Helper()
	api, err := url.Parse(e.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(api.Host, ":")
	cs := kubernetes.NewForConfigOrDie(e.Config)
	// What the API server's ServiceAccount admission plugin (which envtest turns off) and the
	// root CA publisher of kube-controller-manager (which does not run here) would have done:
	// the kube-api-access volume with the service account's token, the cluster's CA and the
	// namespace, mounted where client-go's in-cluster configuration reads them.
	root := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: pod.Namespace},
		Data: map[string]string{"ca.crt": string(e.Config.CAData)}}
	if err := e.Client.Create(ctx, root); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	run := pod.DeepCopy()
	run.Spec.Volumes = append(run.Spec.Volumes, corev1.Volume{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{
		Projected: &corev1.ProjectedVolumeSource{DefaultMode: ptr.To[int32](0o644), Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: ptr.To[int64](3607), Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
		}}}})
	c := &run.Spec.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true})

	// Cluster networking, as far as this Pod needs it: the kubernetes Service is the API
	// server's address here, reached through a socket from the Pod's network namespace.
	sockDir := t.TempDir()
	fwd, err := kubelet.Forward{Listen: "unix:" + filepath.Join(sockDir, "api.sock"), Dial: "tcp:" + api.Host}.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer fwd.Close()
	bin := webhookBinary(t)
	container, err := kubelet.Run(ctx, t.TempDir(), run, c.Name, kubelet.Options{
		API: cs,
		Image: func(ref string) (kubelet.Image, error) {
			if inject.ImageName(ref) != "emissary-istio-webhook" {
				return kubelet.Image{}, fmt.Errorf("no image %s here", ref)
			}
			// The image's ENTRYPOINT (Dockerfile): /webhook.
			return kubelet.Image{Entrypoint: []string{"/webhook"}, Files: map[string]string{"/webhook": bin}}, nil
		},
		Forwards: []kubelet.Forward{{Listen: "tcp:" + api.Host, Dial: "unix:/run/apiserver/api.sock"}},
		Binds:    []kubelet.Bind{{Source: sockDir, Target: "/run/apiserver"}},
		ExtraEnv: []string{"KUBERNETES_SERVICE_HOST=127.0.0.1", "KUBERNETES_SERVICE_PORT=" + port},
		Out:      out,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer container.Stop()
	for {
		if exited, err := container.Exited(); exited {
			var exit *exec.ExitError
			switch {
			case err == nil:
				return 0
			case errors.As(err, &exit) && exit.ExitCode() > 0:
				return exit.ExitCode()
			default:
				t.Fatalf("the selftest container: %v\n%s", err, out.String())
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the selftest container did not end:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// testHelmTest: `helm test` passes with the webhook registered, and fails, saying why, when
// the webhook configuration is gone; either way its throwaway namespace is deleted.
func testHelmTest(t *testing.T, e *Env, h *helmCmd) {
	ctx := context.Background()
	logs, err := helmTest(t, e, h)
	if err != nil {
		t.Fatalf("helm test with the webhook registered: %v\n--- selftest:\n%s", err, logs)
	}
	for _, want := range []string{"ok: Deployment came back injected", "ok: Mapping came back with tls: istio-upstream and service: selftest:80"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the selftest does not say %q:\n%s", want, logs)
		}
	}
	t.Logf("helm test passed:\n%s", logs)
	checkNamespaceDeleted(t, e, selftestPod)
	// The test's RBAC is gone once it passed; its Pod stays for its log.
	sa := &corev1.ServiceAccount{}
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: selftestPod}, sa); !apierrors.IsNotFound(err) {
		t.Errorf("the helm test's ServiceAccount after a pass: %v, want it deleted", err)
	}
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: selftestPod}, &corev1.Pod{}); err != nil {
		t.Errorf("the helm test's Pod after a pass: %v, want it kept", err)
	}

	// The control: the same `helm test` without the webhook configuration.
	mwc := webhookConfiguration(t, e)
	if err := e.Client.Delete(ctx, mwc); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() (string, bool) {
		probe := ProbeDeployment()
		err := e.Client.Create(ctx, probe, client.DryRunAll)
		return "the API server still calls the webhook", err == nil && len(probe.Spec.Template.Spec.Containers) == 1
	})
	logs, err = helmTest(t, e, h)
	if err == nil {
		t.Fatalf("helm test passed without the webhook registered:\n%s", logs)
	}
	for _, want := range []string{"FAIL: Deployment: came back without the emissary-istio.io/status annotation", "FAIL: Mapping: came back with tls: <nil> and service: selftest,",
		"MutatingWebhookConfiguration " + webhookName + " is not registered"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the failed selftest does not say %q:\n%s", want, logs)
		}
	}
	t.Logf("helm test failed as it should: %v\n%s", err, logs)
	checkNamespaceDeleted(t, e, selftestPod)
	// After a failure too, helm deletes the RBAC hooks, which themselves succeeded
	// (docs/chart.md says so); the Pod stays.
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: selftestPod}, sa); !apierrors.IsNotFound(err) {
		t.Errorf("the helm test's ServiceAccount after a failure: %v, want it deleted", err)
	}
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: selftestPod}, &corev1.Pod{}); err != nil {
		t.Errorf("the helm test's Pod after a failure: %v, want it kept", err)
	}

	// Put it back as it was (caBundle included) for what follows.
	mwc.ResourceVersion, mwc.UID, mwc.CreationTimestamp, mwc.Generation, mwc.ManagedFields = "", "", metav1.Time{}, 0, nil
	if err := e.Client.Create(ctx, mwc); err != nil {
		t.Fatal(err)
	}
	if err := e.WaitForWebhook(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// checkNamespaceDeleted: the selftest deleted its namespace name (the API server has no
// namespace controller here to finish the deletion: it is gone or terminating).
func checkNamespaceDeleted(t *testing.T, e *Env, name string) {
	t.Helper()
	ns := &corev1.Namespace{}
	err := e.Client.Get(context.Background(), client.ObjectKey{Name: name}, ns)
	if err == nil && ns.DeletionTimestamp == nil {
		t.Errorf("the selftest left its namespace %s", name)
	}
	// A namespace stuck terminating (no namespace controller) would make the next run wait:
	// finish the deletion as the namespace controller would, the namespace being empty.
	if err == nil {
		ns.Spec.Finalizers = slices.DeleteFunc(ns.Spec.Finalizers, func(f corev1.FinalizerName) bool { return f == corev1.FinalizerKubernetes })
		cs := kubernetes.NewForConfigOrDie(e.Config)
		if _, err := cs.CoreV1().Namespaces().Finalize(context.Background(), ns, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSelftestCLI: `webhook selftest` run from outside the cluster (--kubeconfig) against the
// shared control plane: it passes and cleans up; with Mapping defaulting off it checks the
// Deployment and says it skipped the Mapping; it never takes over a namespace that is not
// its own.
func TestSelftestCLI(t *testing.T) {
	selftest := func(args ...string) (string, error) {
		cmd := exec.Command(webhookBinary(t), append([]string{"selftest", "--kubeconfig", env.Kubeconfig}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := selftest("--namespace", "selftest-cli")
	if err != nil || !strings.Contains(out, "ok: Deployment came back injected") || !strings.Contains(out, "ok: Mapping came back with tls: istio-upstream") {
		t.Fatalf("selftest: %v\n%s", err, out)
	}
	checkNamespaceDeleted(t, env, "selftest-cli")

	config := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(config, []byte("apiVersion: "+inject.ConfigAPIVersion+"\nkind: "+inject.ConfigKind+"\nmapping:\n  meshedNamespaceSelectors: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = selftest("--namespace", "selftest-cli-off", "--config", config)
	if err != nil || !strings.Contains(out, "ok: Deployment") || !strings.Contains(out, "skipped: Mapping: mapping.meshedNamespaceSelectors is empty") {
		t.Fatalf("selftest with Mapping defaulting off: %v\n%s", err, out)
	}
	checkNamespaceDeleted(t, env, "selftest-cli-off")

	if out, err := selftest("--namespace", "default"); err == nil || !strings.Contains(out, "namespace default exists and is not a selftest's") {
		t.Fatalf("selftest in namespace default: %v\n%s", err, out)
	}
	ns := &corev1.Namespace{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: "default"}, ns); err != nil || ns.DeletionTimestamp != nil {
		t.Fatalf("namespace default after the refused selftest: %v %v", err, ns.DeletionTimestamp)
	}
}
