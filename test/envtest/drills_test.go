package envtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mutate"
)

// Failure drills on the real API server. The ones that stop the webhook or the API server
// run on their own control plane, so that the shared env never sees the outage.

// drStart starts a dedicated control plane for one drill; it is stopped when the test ends.
func drStart(t *testing.T, opts Options) *Env {
	t.Helper()
	e, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Logf("stopping the drill's control plane: %v", err)
		}
	})
	return e
}

func drKubectl(t *testing.T, e *Env, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var in []byte
	if stdin != "" {
		in = []byte(stdin)
	}
	return e.Kubectl(in, args...)
}

func drMust(t *testing.T, e *Env, stdin string, args ...string) string {
	t.Helper()
	out, _, err := drKubectl(t, e, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// drEmissary is an Emissary Deployment (the harness's probe) named name in ns, as YAML.
func drEmissary(ns, name string, finalizers ...string) string {
	d := ProbeDeployment()
	d.APIVersion, d.Kind = "apps/v1", "Deployment"
	d.Name, d.Namespace, d.Finalizers = name, ns, finalizers
	b, _ := json.Marshal(d)
	return string(b)
}

// drEmissaryPod is an Emissary Pod named name in ns, as YAML; with owner, one that
// ReplicaSet owner created (as for an injected Deployment: it carries the status annotation).
func drEmissaryPod(ns, name, owner string) string {
	meta := "  name: " + name + "\n  namespace: " + ns + "\n"
	if owner != "" {
		meta += "  annotations:\n    emissary-istio.io/status: '{}'\n  ownerReferences:\n" +
			"  - {apiVersion: apps/v1, kind: ReplicaSet, name: " + owner + ", uid: 5c0c6b0e-6f0b-4bd1-9a55-6b6d0f0b6e11, controller: true}\n"
	}
	return "apiVersion: v1\nkind: Pod\nmetadata:\n" + meta +
		"spec:\n  containers:\n  - {name: ambassador, image: docker.io/emissaryingress/emissary:3.10.0}\n"
}

func drMapping(ns, name, specLines string) string {
	return mappingYAML("v2", ns, name, specLines)
}

// TestDrillWebhookOutage: with the shipped failurePolicy (Fail), matchConditions and
// namespaceSelector, a webhook outage fails exactly the applies the webhook exists for, with
// a message naming it, and nothing else; applies retried after a restart succeed, and a
// stream of Mapping applies across a restart never stores a Mapping without its tls.
func TestDrillWebhookOutage(t *testing.T) {
	e := drStart(t, Options{})
	drMust(t, e, "", "create", "namespace", "outage")
	drMust(t, e, "", "label", "namespace", "outage", "istio-injection=enabled")
	drMust(t, e, "", "create", "namespace", "opted-out")
	drMust(t, e, "", "label", "namespace", "opted-out", "emissary-istio.io/webhook=disabled")
	// Before the outage: an Emissary Deployment with a finalizer, already being deleted.
	drMust(t, e, drEmissary("outage", "finalized", "example.com/hold"), "apply", "-f", "-")
	drMust(t, e, "", "delete", "deployment", "finalized", "-n", "outage", "--wait=false")

	t.Run("down", func(t *testing.T) {
		if err := e.StopWebhook(); err != nil {
			t.Fatal(err)
		}
		// The documented result: the apply fails, saying which webhook and why.
		_, stderr, err := drKubectl(t, e, drEmissary("outage", "emissary"), "apply", "-f", "-")
		if err == nil {
			t.Fatal("an Emissary Deployment was admitted while the webhook was down (failurePolicy Fail)")
		}
		for _, want := range []string{`failed calling webhook "workloads.emissary-istio.io"`, "connection refused"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("kubectl error does not say %q:\n%s", want, stderr)
			}
		}
		if err := e.Client.Get(context.Background(), client.ObjectKey{Namespace: "outage", Name: "emissary"}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
			t.Errorf("the failed apply stored something: %v", err)
		}
		_, stderr, err = drKubectl(t, e, drMapping("outage", "no-tls", "  service: quote\n"), "apply", "-f", "-")
		if err == nil || !strings.Contains(stderr, `failed calling webhook "mappings.emissary-istio.io"`) {
			t.Errorf("a tls-less Mapping in a meshed namespace: err %v, stderr:\n%s", err, stderr)
		}
		_, stderr, err = drKubectl(t, e, drEmissaryPod("outage", "bare", ""), "apply", "-f", "-")
		if err == nil || !strings.Contains(stderr, `failed calling webhook "pods.emissary-istio.io"`) {
			t.Errorf("a bare Emissary Pod: err %v, stderr:\n%s", err, stderr)
		}

		// Everything the webhook does not exist for keeps working.
		for _, c := range []struct {
			name  string
			stdin string
			args  []string
		}{
			{"unrelated Deployment", "", []string{"create", "deployment", "nginx", "--image=nginx:1.27", "-n", "outage"}},
			{"Pod in kube-system", "", []string{"run", "sys-probe", "--image=registry.k8s.io/pause:3.10", "-n", "kube-system"}},
			{"unrelated Pod", "", []string{"run", "pause", "--image=registry.k8s.io/pause:3.10", "-n", "outage"}},
			// The Pods of an injected Deployment's ReplicaSet never reach the webhook.
			{"Emissary Pod of a ReplicaSet", drEmissaryPod("outage", "owned", "emissary-7d9c6b5f4"), []string{"apply", "-f", "-"}},
			{"unrelated DaemonSet", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: outage}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec: {containers: [{name: agent, image: registry.k8s.io/pause:3.10}]}\n", []string{"apply", "-f", "-"}},
			{"Emissary Deployment in kube-system", drEmissary("kube-system", "emissary"), []string{"apply", "-f", "-"}},
			{"Emissary Deployment in an opted-out namespace", drEmissary("opted-out", "emissary"), []string{"apply", "-f", "-"}},
			{"Mapping that sets tls", drMapping("outage", "with-tls", "  service: quote\n  tls: istio-upstream\n"), []string{"apply", "-f", "-"}},
			{"Mapping that sets tls: false", drMapping("outage", "tls-false", "  service: quote\n  tls: false\n"), []string{"apply", "-f", "-"}},
			{"finalizer removed from a Deployment being deleted", "", []string{"patch", "deployment", "finalized", "-n", "outage", "--type=json", "-p", `[{"op":"remove","path":"/metadata/finalizers"}]`}},
		} {
			if _, stderr, err := drKubectl(t, e, c.stdin, c.args...); err != nil {
				t.Errorf("%s failed during the outage: %v\n%s", c.name, err, stderr)
			}
		}
		if out := drMust(t, e, "", "get", "deployment", "emissary", "-n", "kube-system", "-o", "jsonpath={.spec.template.spec.containers[*].name}"); out != "ambassador" {
			t.Errorf("Emissary Deployment in kube-system stored with containers %q: the namespaceSelector should keep the webhook out", out)
		}
		if err := e.Client.Get(context.Background(), client.ObjectKey{Namespace: "outage", Name: "finalized"}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
			t.Errorf("the Deployment whose finalizer was removed still exists: %v", err)
		}

		// Retried after the restart, the failed apply succeeds, integrated.
		if err := e.RestartWebhook(); err != nil {
			t.Fatal(err)
		}
		var out string
		eventually(t, 30*time.Second, func() (string, bool) {
			var err error
			out, _, err = drKubectl(t, e, drEmissary("outage", "emissary"), "apply", "-f", "-")
			return fmt.Sprint(err), err == nil
		})
		if out = drMust(t, e, "", "get", "deployment", "emissary", "-n", "outage", "-o", "jsonpath={.spec.template.spec.containers[*].name}"); out != "ambassador istio-proxy" {
			t.Errorf("retried apply stored containers %q, want the sidecar", out)
		}
	})

	t.Run("restart under a stream of Mapping applies", func(t *testing.T) {
		const total = 200
		ctx := context.Background()
		var failures atomic.Int64
		progress := make(chan int, total)
		done := make(chan error, 1)
		go func() {
			deadline := time.Now().Add(2 * time.Minute)
			for i := 0; i < total; i++ {
				for {
					m := drMappingObject("outage", fmt.Sprintf("stream-%03d", i), "quote")
					err := e.Client.Create(ctx, m)
					if err == nil || apierrors.IsAlreadyExists(err) {
						break
					}
					failures.Add(1)
					if !strings.Contains(err.Error(), "mappings.emissary-istio.io") {
						done <- fmt.Errorf("Mapping %d failed for another reason than the webhook: %w", i, err)
						return
					}
					if time.Now().After(deadline) {
						done <- fmt.Errorf("Mapping %d still failing after 2 minutes: %w", i, err)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				progress <- i
			}
			done <- nil
		}()

		drWaitProgress(t, progress, 50)
		if err := e.StopWebhook(); err != nil {
			t.Fatal(err)
		}
		// Keep the webhook down until the stream has hit the outage.
		eventually(t, 30*time.Second, func() (string, bool) { return "no failed apply yet", failures.Load() > 0 })
		time.Sleep(200 * time.Millisecond)
		if err := e.RestartWebhook(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(3 * time.Minute):
			t.Fatal("the stream did not finish")
		}
		t.Logf("%d Mapping applies, %d failed during the outage and were retried", total, failures.Load())

		list := &unstructured.UnstructuredList{}
		list.SetAPIVersion("getambassador.io/v2")
		list.SetKind("MappingList")
		if err := e.Client.List(ctx, list, client.InNamespace("outage")); err != nil {
			t.Fatal(err)
		}
		stored := 0
		for _, m := range list.Items {
			if !strings.HasPrefix(m.GetName(), "stream-") {
				continue
			}
			stored++
			tls, _, _ := unstructured.NestedFieldNoCopy(m.Object, "spec", "tls")
			svc, _, _ := unstructured.NestedString(m.Object, "spec", "service")
			if tls != "istio-upstream" || svc != "quote:80" {
				t.Errorf("Mapping %s stored un-defaulted: tls %v, service %q", m.GetName(), tls, svc)
			}
		}
		if stored != total {
			t.Errorf("%d stream Mappings stored, want %d", stored, total)
		}
	})
}

func drMappingObject(ns, name, service string) *unstructured.Unstructured {
	m := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "getambassador.io/v2", "kind": "Mapping",
		"metadata": map[string]interface{}{"name": name, "namespace": ns},
		"spec":     map[string]interface{}{"prefix": "/" + name + "/", "service": service},
	}}
	return m
}

func drWaitProgress(t *testing.T, progress <-chan int, n int) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case i := <-progress:
			if i+1 >= n {
				return
			}
		case <-timeout:
			t.Fatalf("the stream did not reach %d applies", n)
		}
	}
}

// TestDrillNamespaceLabelFollows: a namespace gains and loses its mesh label, and the next
// admission through the API server follows within one second (the bound; the
// webhook's metadata informer usually takes milliseconds).
func TestDrillNamespaceLabelFollows(t *testing.T) {
	const ns = "drill-label"
	ensureNamespace(t, ns)
	ctx := context.Background()
	c := biClient(env)
	setLabels := func(labels map[string]interface{}) time.Time {
		patch, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"labels": labels}})
		if err := env.Client.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	// No mesh label left from an earlier run (go test -count=N).
	setLabels(map[string]interface{}{"istio-injection": nil, "istio.io/rev": nil})
	// Start from "known, not meshed" (a namespace the cache has not seen yet looks the same
	// through the API server, so ask the webhook directly).
	review := func() []byte {
		r := biRequest("uid-label", biMappingKind, "CREATE", nil)
		r["namespace"] = ns
		r["object"] = json.RawMessage(biMapping(func(m map[string]interface{}) {
			m["metadata"].(map[string]interface{})["namespace"] = ns
		}))
		return biReview(biReviewV1, r)
	}()
	eventually(t, 10*time.Second, func() (string, bool) {
		_, resp := biPost(t, c, http.MethodPost, mutate.MappingPath, "application/json", review)
		if resp == nil || resp.Result == nil {
			return "no answer", false
		}
		return resp.Result.Message, strings.Contains(resp.Result.Message, "is not meshed")
	})

	// admitted dry-runs a Mapping through the API server and returns its spec.tls.
	admitted := func() string {
		m := drMappingObject(ns, "follows", "api")
		if err := env.Client.Create(ctx, m, client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		tls, _, _ := unstructured.NestedString(m.Object, "spec", "tls")
		return tls
	}

	for _, step := range []struct {
		name    string
		labels  map[string]interface{}
		wantTLS string
	}{
		{"gains istio-injection=enabled", map[string]interface{}{"istio-injection": "enabled"}, "istio-upstream"},
		{"loses it", map[string]interface{}{"istio-injection": nil}, ""},
		{"gains istio.io/rev", map[string]interface{}{"istio.io/rev": "1-28"}, "istio-upstream"},
		{"istio-injection=disabled overrides the revision", map[string]interface{}{"istio-injection": "disabled"}, ""},
	} {
		changed := setLabels(step.labels)
		var got string
		for {
			got = admitted()
			if got == step.wantTLS {
				break
			}
			if time.Since(changed) > time.Second {
				t.Fatalf("%s: admissions still answer tls %q one second after the label change, want %q", step.name, got, step.wantTLS)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("%s: admissions followed after %s", step.name, time.Since(changed).Round(time.Millisecond))
	}
}

// TestDrillAPIServerRestart: kube-apiserver stops and starts again (etcd keeps running). The
// namespace cache is stale while it has no watch, and current again only when the restarted
// API server has answered the informer's re-list (it refuses the watch the informer resumes:
// 410, too old resource version), which its backoff may delay by seconds. Meanwhile the
// replica stays ready and answers workload reviews, which need no namespace; a Mapping review
// that needs a namespace's labels is refused with a clear, retryable answer, never decided
// from stale labels nor stored unchanged. A label set once Mappings are answered again is
// seen at once.
func TestDrillAPIServerRestart(t *testing.T) {
	e := drStart(t, Options{NoWebhook: true})
	// A first restart while nothing watches: it is quick, and it gives kube-apiserver the
	// short stop timeout under which the drill's stop below ends within seconds although the
	// webhook's cache holds a watch open (see StopAPIServer).
	if err := e.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	if err := e.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	bundle, err := certs.Generate(certs.Options{Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	certDir := filepath.Join(e.Dir, "restart-certs")
	if err := bundle.WriteDir(certDir); err != nil {
		t.Fatal(err)
	}
	port, readyz := startExtraServer(t, e.Config, certDir)
	probe := func() (int, string) {
		resp, err := http.Get(readyz)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	eventually(t, 30*time.Second, func() (string, bool) {
		code, body := probe()
		return fmt.Sprintf("readyz %d %s", code, body), code == http.StatusOK
	})
	drMust(t, e, "", "create", "namespace", "after-restart")

	if err := e.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted { // leave a control plane that Stop can stop
			_ = e.StartAPIServer()
		}
	})
	wc := biClient(&Env{CABundle: bundle.CACert})
	url := "https://127.0.0.1:" + strconv.Itoa(port) + mutate.MappingPath
	review := mappingReview(t, "after-restart", "after")
	stillReady := func() {
		t.Helper()
		if code, body := probe(); code != http.StatusOK {
			t.Fatalf("readiness dropped because the namespace cache is stale: %d %s", code, body)
		}
	}
	_, took := eventually(t, 30*time.Second, func() (string, bool) {
		stillReady()
		resp := postReview(t, wc, url, review)
		return fmt.Sprintf("%+v", resp.Result), !resp.Allowed && resp.Result != nil &&
			resp.Result.Code == http.StatusServiceUnavailable && strings.Contains(resp.Result.Message, "namespace cache")
	})
	t.Logf("Mappings refused %s after kube-apiserver stopped; the replica stays ready", took.Round(100*time.Millisecond))

	// The webhook keeps answering workloads (they need no cache), and stays ready.
	answer := postReview(t, wc, "https://127.0.0.1:"+strconv.Itoa(port)+mutate.DeploymentPath,
		biReview(biReviewV1, biRequest("uid-restart", biDeploymentKind, "CREATE", biDeployment(nil))))
	if !answer.Allowed || len(answer.Patch) == 0 {
		t.Errorf("an Emissary Deployment review while the API server was down was not injected: %+v", answer.Result)
	}
	stillReady()

	if err := e.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	_, took = eventually(t, 90*time.Second, func() (string, bool) {
		stillReady()
		resp := postReview(t, wc, url, review)
		return fmt.Sprintf("%+v", resp.Result), resp.Allowed
	})
	t.Logf("Mappings answered again %s after kube-apiserver started", took.Round(100*time.Millisecond))

	// Answered means current: from here on no Mapping is refused, and the cache follows a
	// label set now as fast as at any other time (TestDrillNamespaceLabelFollows' bound).
	drMust(t, e, "", "label", "namespace", "after-restart", "istio-injection=enabled")
	_, took = eventually(t, time.Second, func() (string, bool) {
		resp := postReview(t, wc, url, review)
		if !resp.Allowed {
			t.Fatalf("a Mapping refused again after Mappings were answered, so they were answered before the cache was current: %+v", resp.Result)
		}
		if resp.Result == nil || resp.Result.Message == "" {
			t.Fatalf("a Mapping review without a message: %+v", resp)
		}
		return resp.Result.Message, len(resp.Patch) > 0
	})
	t.Logf("a label set once Mappings were answered again was followed within %s", took.Round(time.Millisecond))
}
