package envtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mutate"
)

// countingTransport counts the API requests a server makes that are not watches.
type countingTransport struct {
	next  http.RoundTripper
	calls atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Query().Get("watch") != "true" {
		c.calls.Add(1)
	}
	return c.next.RoundTrip(r)
}

// TestMappingAdmissionsMakeNoAPICalls: namespace labels come from the metadata-only informer
// cache, so Mapping admissions cost no API request, and /readyz reports the cache.
func TestMappingAdmissionsMakeNoAPICalls(t *testing.T) {
	ensureNamespace(t, "cached", "istio-injection=enabled")
	counter := &countingTransport{}
	restCfg := rest.CopyConfig(env.Config)
	restCfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter }

	port, readyz := startExtraServer(t, restCfg, env.CertDir)
	if body := waitReady(t, readyz, 20*time.Second); !strings.Contains(body, "namespace-cache ok") {
		t.Fatalf("/readyz does not report the namespace cache:\n%s", body)
	}
	client := webhookClient(t)
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, mutate.MappingPath)
	before := counter.calls.Load()
	for i := 0; i < 100; i++ {
		resp := postReview(t, client, url, mappingReview(t, "cached", fmt.Sprintf("m%d", i)))
		if !strings.Contains(string(resp.Patch), "istio-upstream") {
			t.Fatalf("admission %d not defaulted: %+v", i, resp)
		}
	}
	if after := counter.calls.Load(); after != before {
		t.Fatalf("100 Mapping admissions made %d API requests, want 0", after-before)
	}
}

func mappingReview(t *testing.T, ns, name string) []byte {
	t.Helper()
	obj := map[string]interface{}{
		"apiVersion": "getambassador.io/v2", "kind": "Mapping",
		"metadata": map[string]interface{}{"name": name, "namespace": ns},
		"spec":     map[string]interface{}{"prefix": "/", "service": "quote"},
	}
	raw, _ := json.Marshal(obj)
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID("uid-" + name), Operation: admissionv1.Create, Namespace: ns, Name: name,
			Kind:   metav1.GroupVersionKind{Group: "getambassador.io", Version: "v2", Kind: "Mapping"},
			Object: runtime.RawExtension{Raw: raw},
		},
	}
	b, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func postReview(t *testing.T, c *http.Client, url string, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Response == nil {
		t.Fatalf("status %d, undecodable review: %v", resp.StatusCode, err)
	}
	return out.Response
}

// eventually polls check until it reports true, failing t after timeout; it returns check's
// last description and how long it took.
func eventually(t *testing.T, timeout time.Duration, check func() (string, bool)) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		desc, ok := check()
		if ok {
			return desc, time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("not within %s: %s", timeout, desc)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitReady waits until the /readyz at url answers 200 and returns its verbose body.
func waitReady(t *testing.T, url string, timeout time.Duration) string {
	t.Helper()
	body, _ := eventually(t, timeout, func() (string, bool) {
		resp, err := http.Get(url + "?verbose")
		if err != nil {
			return err.Error(), false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), resp.StatusCode == http.StatusOK
	})
	return body
}

// webhookClient is an HTTPS client that trusts the suite's webhook CA.
func webhookClient(t *testing.T) *http.Client {
	t.Helper()
	pool, err := certs.CAPool(env.CABundle)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// startExtraServer runs one more webhook server (not registered with the API server) on
// restCfg, serving the certificate in certDir, with a health listener; it stops when the
// test ends. It returns the HTTPS port and the /readyz URL.
func startExtraServer(t *testing.T, restCfg *rest.Config, certDir string) (int, string) {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	healthPort, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := mutate.NewServer(restCfg, mutate.Options{
		Host: "127.0.0.1", Port: port, CertDir: certDir, MetricsAddr: "0",
		HealthAddr: "127.0.0.1:" + strconv.Itoa(healthPort), Config: inject.DefaultConfig(), Metrics: mutate.NewMetrics(nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Logf("webhook server: %v", err)
		}
	})
	return port, "http://127.0.0.1:" + strconv.Itoa(healthPort) + "/readyz"
}
