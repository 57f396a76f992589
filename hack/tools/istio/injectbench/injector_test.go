// Package injectbench measures Istio's own sidecar injector, the injector Emissary's users
// already run, on the seed's Emissary pod: the peer figure `make bench` reports next to
// BenchmarkAdmitDeployment (test/benchreport). It lives in the Istio tool module because
// istio.io/istio pins other k8s.io versions than the webhook.
//
// The injector is the one istiod serves: pkg/kube/inject's webhook, with the injection
// template, values and mesh config that Istio's own istio-discovery chart renders by default,
// and the review goes through its HTTP handler, AdmissionReview bytes in and out, as
// BenchmarkAdmitDeployment does through controller-runtime's.
package injectbench

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"istio.io/istio/operator/pkg/render"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/mesh/meshwatcher"
	"istio.io/istio/pkg/kube/inject"
	"istio.io/istio/pkg/kube/multicluster"
	"istio.io/istio/pkg/log"
)

// seedFile is the seed's Emissary Deployment, the input of BenchmarkAdmitDeployment too.
const seedFile = "../../../../test/envtest/testdata/emissary-deployment.yaml"

var setup = sync.OnceValues(newInjector)

// injector is istiod's injection handler and a review of the seed's pod.
type injector struct {
	handler http.Handler
	review  []byte
}

func newInjector() (*injector, error) {
	// istiod logs two lines per injection at its default level; the webhook's benchmarks log
	// nothing either, so only the injection itself is compared.
	for _, scope := range log.Scopes() {
		scope.SetOutputLevel(log.ErrorLevel)
	}
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/istio").Output()
	if err != nil {
		return nil, err
	}
	// What `istioctl install --set profile=empty --set components.pilot.enabled=true` renders.
	sets, _, err := render.GenerateManifest(nil, []string{
		"installPackagePath=" + filepath.Join(strings.TrimSpace(string(dir)), "manifests"),
		"profile=empty", "components.pilot.enabled=true",
	}, false, nil, nil)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "injectbench")
	if err != nil {
		return nil, err
	}
	meshConfig := mesh.DefaultMeshConfig()
	var configFile, valuesFile string
	for _, set := range sets {
		for _, m := range set.Manifests {
			data, _ := m.Object["data"].(map[string]any)
			switch {
			case m.GetKind() == "ConfigMap" && m.GetName() == "istio-sidecar-injector":
				configFile, valuesFile = filepath.Join(tmp, "config"), filepath.Join(tmp, "values")
				if err := os.WriteFile(configFile, []byte(data["config"].(string)), 0o644); err != nil {
					return nil, err
				}
				if err := os.WriteFile(valuesFile, []byte(data["values"].(string)), 0o644); err != nil {
					return nil, err
				}
			case m.GetKind() == "ConfigMap" && m.GetName() == "istio":
				if meshConfig, err = mesh.ApplyMeshConfig(data["mesh"].(string), mesh.DefaultMeshConfig()); err != nil {
					return nil, err
				}
			}
		}
	}
	watcher, err := inject.NewFileWatcher(configFile, valuesFile)
	if err != nil {
		return nil, err
	}
	store := model.NewFakeStore()
	env := &model.Environment{Watcher: meshwatcher.NewTestWatcher(meshConfig), ConfigStore: store}
	env.SetPushContext(&model.PushContext{ProxyConfigs: model.GetProxyConfigs(store, meshConfig)})
	mux := http.NewServeMux()
	wh, err := inject.NewWebhook(inject.WebhookParameters{
		Watcher: watcher, Env: env, Mux: mux, MultiCluster: multicluster.NewFakeController(),
	})
	if err != nil {
		return nil, err
	}
	wh.Run(make(chan struct{}))
	review, err := seedPodReview()
	return &injector{handler: mux, review: review}, err
}

// seedPodReview is the CREATE review of the Pod a ReplicaSet makes from the seed's template,
// without the seed's sidecar.istio.io/inject: "false" (with it, Istio would rightly skip it).
func seedPodReview() ([]byte, error) {
	raw, err := os.ReadFile(seedFile)
	if err != nil {
		return nil, err
	}
	var d appsv1.Deployment
	if err := yaml.Unmarshal(raw, &d); err != nil {
		return nil, err
	}
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: *d.Spec.Template.ObjectMeta.DeepCopy(),
		Spec:       d.Spec.Template.Spec,
	}
	pod.GenerateName, pod.Namespace = d.Name+"-7c9f8d6b5-", d.Namespace
	delete(pod.Annotations, "sidecar.istio.io/inject")
	object, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	return json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "0d2b4c8e-8d5a-4c1e-9f3b-2a6f1e7c9b10",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: d.Namespace,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: object},
		},
	})
}

func (in *injector) serve() *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "https://istiod.istio-system.svc:443/inject", bytes.NewReader(in.review))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	in.handler.ServeHTTP(rec, req)
	return rec
}

// TestIstioInjectsTheSeedPod: the benchmark measures a real injection, not a refusal.
func TestIstioInjectsTheSeedPod(t *testing.T) {
	in, err := setup()
	if err != nil {
		t.Fatal(err)
	}
	rec := in.serve()
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil {
		t.Fatalf("answer %d %s: %v", rec.Code, rec.Body, err)
	}
	if !review.Response.Allowed || !bytes.Contains(review.Response.Patch, []byte(`"name":"istio-proxy"`)) {
		t.Fatalf("Istio did not inject istio-proxy: %s", rec.Body)
	}
}

// BenchmarkIstioInjectEmissaryPod is one injection by Istio's injector, review bytes in and out.
// Like the webhook's benchmarks it reports cpu-ns/op, the process's CPU time per review.
func BenchmarkIstioInjectEmissaryPod(b *testing.B) {
	in, err := setup()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(in.review)))
	b.ReportAllocs()
	cpu := processCPU()
	for b.Loop() {
		if rec := in.serve(); rec.Code != http.StatusOK {
			b.Fatalf("answer %d %s", rec.Code, rec.Body)
		}
	}
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
