package envtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/mutate"
)

// TestConcurrentAdmissions sends 1,000 admission reviews at once to the real HTTPS server
// (one connection each, so the server also does 1,000 TLS handshakes at once): Emissary
// Deployments, Mappings to a meshed namespace and Deployments that are not Emissary, each
// with its own uid. Every answer must be the one that request gets alone: zero errors. `make
// test-race` runs it with the race detector, which fails the test on any data race in the
// handlers, the shared configuration, the namespace cache or the metrics.
func TestConcurrentAdmissions(t *testing.T) {
	const n = 1000
	ensureNamespace(t, biMeshedNS, "istio-injection=enabled")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.CABundle)
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		MaxIdleConnsPerHost: n,
	}
	defer transport.CloseIdleConnections()
	c := &http.Client{Transport: transport, Timeout: 2 * time.Minute}

	type request struct {
		path   string
		body   []byte
		object []byte
		check  func(patched []byte) error // nil: no patch expected
	}
	emissary := biDeployment(nil)
	plain := biDeployment(func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "nginx:1.27" })
	mapping := biMapping(nil)
	injected := func(patched []byte) error {
		var d appsv1.Deployment
		if err := json.Unmarshal(patched, &d); err != nil {
			return err
		}
		if countContainers(&d, "istio-proxy") != 1 {
			return fmt.Errorf("%d istio-proxy containers", countContainers(&d, "istio-proxy"))
		}
		return nil
	}
	defaulted := func(patched []byte) error {
		var m map[string]interface{}
		if err := json.Unmarshal(patched, &m); err != nil {
			return err
		}
		if tls, _, _ := unstructured.NestedString(m, "spec", "tls"); tls != "istio-upstream" {
			return fmt.Errorf("tls %q", tls)
		}
		return nil
	}
	reqs := make([]request, n)
	for i := range reqs {
		uid := fmt.Sprintf("concurrent-%04d", i)
		switch i % 4 {
		case 0, 1:
			reqs[i] = request{mutate.DeploymentPath, biReview(biReviewV1, biRequest(uid, biDeploymentKind, "CREATE", emissary)), emissary, injected}
		case 2:
			reqs[i] = request{mutate.MappingPath, biReview(biReviewV1, biRequest(uid, biMappingKind, "CREATE", mapping)), mapping, defaulted}
		case 3:
			reqs[i] = request{mutate.DeploymentPath, biReview(biReviewV1, biRequest(uid, biDeploymentKind, "CREATE", plain)), plain, nil}
		}
	}
	// The namespace cache has seen the label before the burst.
	eventually(t, 10*time.Second, func() (string, bool) {
		_, resp := biPost(t, c, http.MethodPost, mutate.MappingPath, "application/json", reqs[2].body)
		return "Mapping not defaulted yet", resp != nil && len(resp.Patch) > 0
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Add(1)
		go func(i int, r request) {
			defer wg.Done()
			<-start
			errs <- func() error {
				hr, err := http.NewRequestWithContext(ctx, http.MethodPost, env.WebhookURL+r.path, bytes.NewReader(r.body))
				if err != nil {
					return err
				}
				hr.Header.Set("Content-Type", "application/json")
				resp, err := c.Do(hr)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					return err
				}
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, body)
				}
				var review admissionv1.AdmissionReview
				if err := json.Unmarshal(body, &review); err != nil || review.Response == nil {
					return fmt.Errorf("not a review (%v): %.200s", err, body)
				}
				a := review.Response
				if want := fmt.Sprintf("concurrent-%04d", i); string(a.UID) != want {
					return fmt.Errorf("answer for %s carries uid %s", want, a.UID)
				}
				if !a.Allowed || a.Result == nil || a.Result.Code != http.StatusOK {
					return fmt.Errorf("not allowed: %+v", a.Result)
				}
				if r.check == nil {
					if len(a.Patch) > 0 {
						return fmt.Errorf("unexpected patch %.200s", a.Patch)
					}
					return nil
				}
				p, err := jsonpatch.DecodePatch(a.Patch)
				if err != nil {
					return err
				}
				patched, err := p.Apply(r.object)
				if err != nil {
					return fmt.Errorf("patch does not apply: %w", err)
				}
				return r.check(patched)
			}()
		}(i, reqs[i])
	}
	began := time.Now()
	close(start)
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			if failed <= 5 {
				t.Error(err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d concurrent admissions failed", failed, n)
	}
	t.Logf("%d concurrent admissions in %s, zero errors", n, time.Since(began).Round(time.Millisecond))
}
