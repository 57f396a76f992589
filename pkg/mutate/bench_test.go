//go:build unix

package mutate

// Benchmarks of the admission handlers, each against a floor measured the same way in the
// same run. Everything goes through controller-runtime's admission.Webhook.ServeHTTP, as in
// `webhook serve`: request bytes in, AdmissionReview decoded (the object stays raw bytes),
// handler, response completed (patch marshalled), AdmissionReview encoded, bytes out. The
// floor is that same path with a handler that allows without reading the object, so a ratio
// to it is the cost of our handler relative to the cost no handler can avoid.
//
// Besides wall time, each benchmark reports cpu-ns/op: the CPU time of the whole process per
// review (getrusage; garbage collection included). On a machine shared with other work, wall
// time includes waiting for a core and CPU time does not, so its ratios are the steadier.
//
// The reviews are ones kube-apiserver really sent for the seed's objects (test/reviews): with
// the server's defaults, managedFields and kubectl's last-applied-configuration annotation.
//
// The names are fixed (issue 6) so that results stay comparable over time; docs/PERFORMANCE.md
// lists the targets. BenchmarkReviewFloorNoop is the floor of the Noop review, which is an
// UPDATE and so carries the object twice.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/test/reviews"
)

func init() {
	// The logger `webhook serve` builds (zap, JSON, info level), writing nowhere: log lines
	// are encoded as in production, so their cost is in the numbers.
	logf.SetLogger(zap.New(zap.WriteTo(io.Discard)))
}

// floorWebhook allows everything without looking at the object.
func floorWebhook() *admission.Webhook {
	return &admission.Webhook{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Allowed("")
	})}
}

func benchDeploymentWebhook() *admission.Webhook {
	return &admission.Webhook{Handler: &WorkloadHandler{Config: NewConfigHolder(inject.DefaultConfig()), Metrics: NewMetrics(nil)}}
}

func benchMappingWebhook() *admission.Webhook {
	return &admission.Webhook{Handler: &MappingHandler{
		Config:     NewConfigHolder(inject.DefaultConfig()),
		Namespaces: NamespaceCache{Reader: benchNamespaces(100)},
		Metrics:    NewMetrics(nil),
	}}
}

// namespaceStore stands in for the manager's cache: a map lookup and a deep copy of the stored
// PartialObjectMetadata, which is what controller-runtime's cache reader does.
type namespaceStore map[string]*metav1.PartialObjectMetadata

// benchNamespaces has n namespaces; "default" is meshed, the others are not.
func benchNamespaces(n int) namespaceStore {
	s := namespaceStore{}
	for i := range n {
		m := NamespaceObject()
		m.Name = fmt.Sprintf("ns-%d", i)
		if i == 0 {
			m.Name = "default"
		}
		m.Labels = map[string]string{"kubernetes.io/metadata.name": m.Name}
		if m.Name == "default" {
			m.Labels["istio-injection"] = "enabled"
		}
		s[m.Name] = m
	}
	return s
}

func (s namespaceStore) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	m, ok := s[key.Name]
	if !ok {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, key.Name)
	}
	m.DeepCopyInto(obj.(*metav1.PartialObjectMetadata))
	return nil
}

func (s namespaceStore) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return fmt.Errorf("not implemented")
}

// benchReview builds one of the reviews in test/reviews.
func benchReview(b *testing.B, build func() ([]byte, error)) []byte {
	body, err := build()
	if err != nil {
		b.Fatal(err)
	}
	return body
}

func reviewRequest(body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	return r
}

// benchServe measures hook on body. One response is checked first, so that a benchmark never
// silently measures the wrong path (an error, or a skip instead of a mutation).
func benchServe(b *testing.B, hook http.Handler, body []byte, wantPatch bool) {
	w := httptest.NewRecorder()
	hook.ServeHTTP(w, reviewRequest(body))
	resp, err := reviews.Response(w.Body.Bytes())
	if err == nil {
		err = reviews.Check(resp, wantPatch)
	}
	if err != nil {
		b.Fatal(err)
	}
	req := reviewRequest(body)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	cpu := processCPU()
	for b.Loop() {
		req.Body = io.NopCloser(bytes.NewReader(body))
		w := httptest.NewRecorder()
		hook.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body.String())
		}
	}
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkReviewFloor(b *testing.B) {
	benchServe(b, floorWebhook(), benchReview(b, reviews.Seed), false)
}

func BenchmarkAdmitDeployment(b *testing.B) {
	benchServe(b, benchDeploymentWebhook(), benchReview(b, reviews.Seed), true)
}

func BenchmarkReviewFloorLarge(b *testing.B) {
	benchServe(b, floorWebhook(), benchReview(b, reviews.Large), false)
}

func BenchmarkAdmitDeploymentLarge(b *testing.B) {
	benchServe(b, benchDeploymentWebhook(), benchReview(b, reviews.Large), true)
}

func BenchmarkReviewFloorNoop(b *testing.B) {
	benchServe(b, floorWebhook(), benchReview(b, reviews.Noop), false)
}

func BenchmarkAdmitDeploymentNoop(b *testing.B) {
	benchServe(b, benchDeploymentWebhook(), benchReview(b, reviews.Noop), false)
}

func BenchmarkReviewFloorMapping(b *testing.B) {
	benchServe(b, floorWebhook(), benchReview(b, reviews.Mapping), false)
}

func BenchmarkAdmitMapping(b *testing.B) {
	benchServe(b, benchMappingWebhook(), benchReview(b, reviews.Mapping), true)
}
