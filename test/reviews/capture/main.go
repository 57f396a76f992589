// Command capture records the AdmissionReviews kube-apiserver sends for the benchmark objects
// and writes them to test/reviews/testdata, which the benchmarks and the load test read:
//
//	go run ./test/reviews/capture
//
// It starts a control plane with the webhook registered (test/envtest), puts a recording
// proxy between the API server and the webhook, and applies the objects with the real
// kubectl, as a user would:
//
//	seed.json     kubectl apply of the seed's Emissary Deployment (CREATE; injected)
//	noop.json     kubectl apply --server-side of it again (UPDATE of the stored, injected
//	              Deployment; answered without a patch)
//	large.json    kubectl apply of the seed with 1,000 env vars and 200 volume mounts
//	mapping.json  kubectl apply of the seed's quote-backend Mapping (CREATE; defaulted)
//
// Only the request UID is changed (to reviews.UID). Run it again when the injected sidecar
// changes (a new default Istio version): noop.json then no longer answers "up to date".
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mutate"
	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
	"github.com/emissary-istio/emissary-istio-webhook/test/reviews"
)

func main() {
	ctrllog.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	if err := capture(); err != nil {
		fmt.Fprintln(os.Stderr, "capture:", err)
		os.Exit(1)
	}
}

// exchange is one review the proxy passed on, with the webhook's answer.
type exchange struct {
	path              string
	request, response []byte
}

type recorder struct {
	mu   sync.Mutex
	seen []exchange
}

func (r *recorder) take() []exchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := r.seen
	r.seen = nil
	return seen
}

func capture() error {
	env, err := envtest.Start(envtest.Options{})
	if err != nil {
		return err
	}
	defer env.Stop()
	ctx := context.Background()

	// The recording proxy, serving the webhook's own certificate.
	pair, _, err := certs.Load(env.CertDir)
	if err != nil {
		return err
	}
	pool, err := certs.CAPool(env.CABundle)
	if err != nil {
		return err
	}
	target, err := url.Parse(env.WebhookURL)
	if err != nil {
		return err
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}
	rec := &recorder{}
	proxy.ModifyResponse = func(resp *http.Response) error {
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		req := resp.Request.Context().Value(requestBody{}).([]byte)
		rec.mu.Lock()
		rec.seen = append(rec.seen, exchange{path: resp.Request.URL.Path, request: req, response: body})
		rec.mu.Unlock()
		return nil
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestBody{}, body)))
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	if err := register(ctx, env, "https://"+ln.Addr().(*net.TCPAddr).String()); err != nil {
		return err
	}
	if err := waitThroughProxy(ctx, env, rec); err != nil {
		return err
	}
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ambassador"}}); err != nil {
		return err
	}
	def := &corev1.Namespace{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "default"}, def); err != nil {
		return err
	}
	def.Labels["istio-injection"] = "enabled"
	if err := env.Client.Update(ctx, def); err != nil {
		return err
	}
	large, err := largeManifest(env.Dir)
	if err != nil {
		return err
	}
	time.Sleep(time.Second) // the webhook's cache sees the label

	out := filepath.Join(envtest.RepoRoot(), "test", "reviews", "testdata")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, c := range []struct {
		file, path string
		kubectl    []string
		wantPatch  bool
	}{
		{"seed.json", mutate.DeploymentPath, []string{"apply", "-f", reviews.SeedFile}, true},
		{"noop.json", mutate.DeploymentPath, []string{"apply", "--server-side", "--force-conflicts", "-f", reviews.SeedFile}, false},
		{"large.json", mutate.DeploymentPath, []string{"apply", "-f", large}, true},
		{"mapping.json", mutate.MappingPath, []string{"apply", "-f", reviews.MappingFile}, true},
	} {
		rec.take()
		if _, _, err := env.Kubectl(nil, c.kubectl...); err != nil {
			return err
		}
		ex, err := first(rec.take(), c.path)
		if err != nil {
			return fmt.Errorf("%s: %w", c.file, err)
		}
		var ar admissionv1.AdmissionReview
		if err := json.Unmarshal(ex.response, &ar); err != nil || ar.Response == nil {
			return fmt.Errorf("%s: answer %s: %v", c.file, ex.response, err)
		}
		if got := len(ar.Response.Patch) > 0; got != c.wantPatch || !ar.Response.Allowed {
			return fmt.Errorf("%s: the webhook answered allowed=%t, patch=%t; want a patch: %t", c.file, ar.Response.Allowed, got, c.wantPatch)
		}
		var req admissionv1.AdmissionReview
		if err := json.Unmarshal(ex.request, &req); err != nil || req.Request == nil {
			return fmt.Errorf("%s: request: %v", c.file, err)
		}
		body := bytes.ReplaceAll(ex.request, []byte(`"`+string(req.Request.UID)+`"`), []byte(`"`+reviews.UID+`"`))
		if err := os.WriteFile(filepath.Join(out, c.file), append(body, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Printf("%s: %s %s, %d bytes\n", c.file, req.Request.Operation, req.Request.Kind.Kind, len(body))
	}
	return nil
}

type requestBody struct{}

// register points the webhook configuration at the proxy.
func register(ctx context.Context, env *envtest.Env, url string) error {
	mwc, err := envtest.WebhookConfiguration(url, env.CABundle)
	if err != nil {
		return err
	}
	cur := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(mwc), cur); err != nil {
		return err
	}
	mwc.ResourceVersion = cur.ResourceVersion
	return env.Client.Update(ctx, mwc)
}

// waitThroughProxy returns once the API server calls the webhook through the proxy.
func waitThroughProxy(ctx context.Context, env *envtest.Env, rec *recorder) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		rec.take()
		if err := env.Client.Create(ctx, envtest.ProbeDeployment(), client.DryRunAll); err == nil {
			if _, err := first(rec.take(), mutate.DeploymentPath); err == nil {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("the API server does not call the webhook through the proxy")
}

func first(seen []exchange, path string) (exchange, error) {
	for _, ex := range seen {
		if ex.path == path {
			return ex, nil
		}
	}
	return exchange{}, fmt.Errorf("no review for %s recorded", path)
}

// largeManifest writes the seed with 1,000 env vars on its Emissary container and 200 volumes
// mounted into it, named ambassador-large, and returns the file's path.
func largeManifest(dir string) (string, error) {
	src, err := os.ReadFile(reviews.SeedFile)
	if err != nil {
		return "", err
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(src, &d); err != nil {
		return "", err
	}
	reviews.Enlarge(&d)
	d.Name = "ambassador-large"
	j, err := json.Marshal(&d)
	if err != nil {
		return "", err
	}
	var m map[string]interface{}
	if err := json.Unmarshal(j, &m); err != nil {
		return "", err
	}
	b, err := json.Marshal(prune(m))
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "large.json")
	return path, os.WriteFile(path, b, 0o644)
}

// prune drops the nulls and empty objects the typed encoding adds (creationTimestamp: null,
// status: {}, resources: {}) and a user would not write.
func prune(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		for k, x := range t {
			x = prune(x)
			if m, ok := x.(map[string]interface{}); x == nil || ok && len(m) == 0 {
				delete(t, k)
				continue
			}
			t[k] = x
		}
	case []interface{}:
		for i := range t {
			t[i] = prune(t[i])
		}
	}
	return v
}
