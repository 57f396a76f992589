// Package istio runs Istio's real control plane and sidecar agent, built from istio.io/istio by
// `make istio`, on the envtest control plane, and checks the sidecar the webhook injects
// against them: the real-Istio suite.
package istio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
	"github.com/emissary-istio/emissary-istio-webhook/test/kubelet"
)

// BinDir is where pilot-agent, pilot-discovery, xdsprobe and istioinject are: $ISTIO_BIN as
// the Makefile sets it, else the newest bin/istio/<version>.
func BinDir() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"pilot-agent", "pilot-discovery", "xdsprobe", "istioinject"} {
			if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv("ISTIO_BIN"); dir != "" && has(dir) {
		return dir, nil
	}
	if dir := envtest.NewestVersionDir(filepath.Join(envtest.RepoRoot(), "bin", "istio"), has); dir != "" {
		return dir, nil
	}
	return "", errors.New("istio: pilot-agent, pilot-discovery, xdsprobe and istioinject not found; run `make istio` (or `make test`, which builds them)")
}

// Istiod is one istiod (pilot-discovery) running in a network namespace of its own, so it
// listens on its usual ports (15012 XDS and CA, 8080 HTTP, 15017 webhooks) without taking any
// port of this machine. It reaches kube-apiserver, and is reached, through Unix sockets in Dir:
// grpcs.sock (15012), http.sock (8080) and webhook.sock (15017).
type Istiod struct {
	Revision string // "default" or a revision name
	Dir      string
	// Chart is Istio's istio-discovery chart as rendered for this istiod.
	Chart discoveryChart
	// InjectorURL is where the API server calls istiod's sidecar injector (with
	// IstiodOptions.Injector): https://localhost:PORT/inject.
	InjectorURL string

	env   *envtest.Env
	opts  IstiodOptions
	proc  *kubelet.Process
	log   *envtest.LockedBuffer
	stops []func()
}

// Ports inside istiod's network namespace.
const (
	istiodGRPCS   = "15012"
	istiodHTTP    = "8080"
	istiodWebhook = "15017"
)

// IstiodOptions configure one istiod.
type IstiodOptions struct {
	Revision    string // "" means default
	TrustDomain string // "" means cluster.local
	// Injector registers istiod's own sidecar injector as Istio's chart installs it: the
	// chart's injection ConfigMap, and its MutatingWebhookConfiguration pointed at istiod's
	// webhook port through a port of this machine, with the caBundle istiod itself patches in
	// (its serving certificate names localhost: ISTIOD_CUSTOM_HOST). Stop removes both.
	Injector bool
	// Env is added to istiod's environment (e.g. ENABLE_NATIVE_SIDECARS).
	Env []string
	// Values are helm --set values for the chart (e.g. global.hub=registry.example.com/istio),
	// after the suite's own (the release under test's hub and tag).
	Values []string
	// Install applies, besides the injector (Install implies Injector), the rest of what the
	// chart installs that a reader of the mesh sees: its ConfigMaps (the mesh config
	// istio[-<rev>] among them) and its Services. Stop removes them.
	Install bool
}

// StartIstiod runs istiod as Istio's istio-discovery chart does in a cluster (the chart's
// mesh configuration, its own CA with a self-signed root, PILOT_CERT_PROVIDER=istiod), with
// env's admin kubeconfig, and waits until it is ready (and, with opts.Injector, until the API
// server calls its injector).
func StartIstiod(ctx context.Context, e *envtest.Env, bin, dir string, opts IstiodOptions) (_ *Istiod, err error) {
	if opts.Revision == "" {
		opts.Revision = "default"
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if opts.Install {
		opts.Injector = true
	}
	d := &Istiod{Revision: opts.Revision, Dir: dir, env: e, opts: opts, log: &envtest.LockedBuffer{}}
	defer func() {
		if err != nil {
			d.Stop()
		}
	}()
	if err := ensureIstioNamespace(ctx, e); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	chart, err := renderDiscoveryChart(opts)
	if err != nil {
		return nil, err
	}
	d.Chart = chart
	suffix := ""
	if opts.Revision != "default" {
		suffix = "-" + opts.Revision
	}
	meshConfig := &corev1.ConfigMap{}
	if err := chart.get("ConfigMap", "istio"+suffix, meshConfig); err != nil {
		return nil, err
	}
	mesh := filepath.Join(dir, "mesh")
	if err := os.WriteFile(mesh, []byte(meshConfig.Data["mesh"]), 0o644); err != nil {
		return nil, err
	}
	env := append([]string{"PATH=/usr/bin:/bin", "POD_NAMESPACE=istio-system", "POD_NAME=istiod" + suffix + "-test",
		"REVISION=" + opts.Revision, "PILOT_CERT_PROVIDER=istiod", "JWT_POLICY=third-party-jwt",
		"CLUSTER_ID=Kubernetes", "KUBECONFIG=" + e.Kubeconfig}, opts.Env...)
	if opts.Injector {
		// istiod reads the injection template at start, from the chart's ConfigMap.
		injector := &corev1.ConfigMap{}
		if err := chart.get("ConfigMap", "istio-sidecar-injector"+suffix, injector); err != nil {
			return nil, err
		}
		if err := d.apply(ctx, injector); err != nil {
			return nil, err
		}
		env = append(env, "ISTIOD_CUSTOM_HOST=localhost")
	}
	if opts.Install {
		for _, u := range chart {
			if k := u.GetKind(); (k == "ConfigMap" && u.GetName() != "istio-sidecar-injector"+suffix) || k == "Service" {
				if err := d.apply(ctx, u.DeepCopy()); err != nil {
					return nil, err
				}
			}
		}
	}
	// kube-apiserver listens on this machine's loopback: give istiod the same address in its
	// namespace, forwarded through a socket.
	api, err := url.Parse(e.Config.Host)
	if err != nil {
		return nil, err
	}
	apiSock := filepath.Join(dir, "apiserver.sock")
	if _, err := d.forward(kubelet.Forward{Listen: "unix:" + apiSock, Dial: "tcp:" + api.Host}); err != nil {
		return nil, err
	}
	d.proc, err = kubelet.Start(kubelet.Sandbox{
		Hostname: "istiod" + suffix + "-test",
		Argv: []string{filepath.Join(bin, "pilot-discovery"), "discovery",
			"--kubeconfig", e.Kubeconfig, "--meshConfig", mesh,
			"--clusterID", "Kubernetes", "--domain", "cluster.local"},
		Env: env,
		Dir: dir,
		Forwards: []kubelet.Forward{
			{Listen: "tcp:" + api.Host, Dial: "unix:" + apiSock},
			{Listen: "unix:" + d.Socket(istiodGRPCS), Dial: "tcp:127.0.0.1:" + istiodGRPCS},
			{Listen: "unix:" + d.Socket(istiodHTTP), Dial: "tcp:127.0.0.1:" + istiodHTTP},
			{Listen: "unix:" + d.Socket(istiodWebhook), Dial: "tcp:127.0.0.1:" + istiodWebhook},
		},
	}, d.log)
	if err != nil {
		return nil, err
	}
	if err := d.wait(ctx, "ready", func() (bool, error) {
		status, _, err := d.Get(ctx, "/ready")
		return err == nil && status == http.StatusOK, nil
	}); err != nil {
		return nil, err
	}
	if opts.Injector {
		if err := d.registerInjector(ctx, chart, "istio-sidecar-injector"+suffix); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// ensureIstioNamespace creates istio-system, where Istio's chart installs and istiod keeps
// its CA (istio-ca-secret), unless it exists.
func ensureIstioNamespace(ctx context.Context, e *envtest.Env) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}
	if err := e.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// registerInjector applies the chart's MutatingWebhookConfiguration name, pointed at a port
// of this machine that leads to istiod's webhook port, and waits until istiod has patched its
// caBundle and the API server has istiod inject a Pod.
func (d *Istiod) registerInjector(ctx context.Context, chart discoveryChart, name string) error {
	l, err := d.forward(kubelet.Forward{Listen: "tcp:127.0.0.1:0", Dial: "unix:" + d.Socket(istiodWebhook)})
	if err != nil {
		return err
	}
	d.InjectorURL = fmt.Sprintf("https://localhost:%d/inject", l.Addr().(*net.TCPAddr).Port)
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := chart.get("MutatingWebhookConfiguration", name, mwc); err != nil {
		return err
	}
	if err := envtest.PointAt(mwc, strings.TrimSuffix(d.InjectorURL, "/inject"), nil); err != nil {
		return err
	}
	if err := d.apply(ctx, mwc); err != nil {
		return err
	}
	// A Pod that asks this revision for injection, in a namespace without Istio's labels.
	probeLabels := map[string]string{"sidecar.istio.io/inject": "true"}
	if d.Revision != "default" {
		probeLabels = map[string]string{"istio.io/rev": d.Revision}
	}
	var last error
	err = d.wait(ctx, "injecting through "+d.InjectorURL, func() (bool, error) {
		probe := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "istio-injector-probe", Namespace: "istio-system", Labels: probeLabels},
			Spec: corev1.PodSpec{ServiceAccountName: "default", // the proxy's token needs one
				Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
		}
		if last = d.env.Client.Create(ctx, probe, client.DryRunAll); last != nil {
			return false, nil
		}
		return podContainer(probe, "istio-proxy") != nil, nil
	})
	if err != nil {
		return fmt.Errorf("%w (last answer: %v)", err, last)
	}
	return nil
}

// PointTags points revision tags at this istiod's revision as Istio's Helm upgrade guide
// does, creating a tag or moving it from another revision: the chart of this revision
// rendered with revisionTags, only its revision-tag templates, piped into `kubectl apply`.
// The tags outlive Stop: the caller removes them (deleteRevisionTags).
func (d *Istiod) PointTags(ctx context.Context, tags ...string) error {
	manifest, err := revisionTagManifest(d.opts, tags...)
	if err != nil {
		return err
	}
	_, _, err = d.env.Kubectl(manifest, "apply", "-f", "-")
	return err
}

// deleteRevisionTags removes what PointTags applied for tags.
func deleteRevisionTags(e *envtest.Env, tags ...string) error {
	for _, tag := range tags {
		for _, args := range [][]string{
			{"delete", "mutatingwebhookconfiguration", "-l", "istio.io/tag=" + tag},
			{"delete", "-n", "istio-system", "service", "-l", "istio.io/tag=" + tag},
		} {
			if _, _, err := e.Kubectl(nil, args...); err != nil {
				return err
			}
		}
	}
	return nil
}

// apply creates obj, or replaces the one a previous run left; Stop deletes it.
func (d *Istiod) apply(ctx context.Context, obj client.Object) error {
	c := d.env.Client
	if err := c.Create(ctx, obj); apierrors.IsAlreadyExists(err) {
		existing := obj.DeepCopyObject().(client.Object)
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), existing); err != nil {
			return err
		}
		obj.SetResourceVersion(existing.GetResourceVersion())
		err = c.Update(ctx, obj)
		if err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	d.stops = append(d.stops, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Delete(ctx, obj)
	})
	return nil
}

// forward starts f on this machine until Stop.
func (d *Istiod) forward(f kubelet.Forward) (net.Listener, error) {
	l, err := f.Start()
	if err != nil {
		return nil, err
	}
	d.stops = append(d.stops, func() { _ = l.Close() })
	return l, nil
}

// wait polls done until it is true, istiod exits or ctx ends.
func (d *Istiod) wait(ctx context.Context, what string, done func() (bool, error)) error {
	var exited error
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
		if ok, err := done(); ok || err != nil {
			return ok, err
		}
		if gone, err := d.proc.Exited(); gone {
			exited = fmt.Errorf("istiod %s exited (%v):\n%s", d.Revision, err, d.Log(4000))
			return false, exited
		}
		return false, nil
	})
	if err != nil && exited == nil && ctx.Err() != nil {
		return fmt.Errorf("istiod %s not %s: %w:\n%s", d.Revision, what, ctx.Err(), d.Log(4000))
	}
	return err
}

// podContainer is pod's container (or init container) name, or nil.
func podContainer(pod *corev1.Pod, name string) *corev1.Container {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			if cs[i].Name == name {
				return &cs[i]
			}
		}
	}
	return nil
}

// Service is the host name of istiod's Service for its XDS and CA port, as the chart names it.
func (d *Istiod) Service() string {
	if d.Revision == "default" {
		return "istiod.istio-system.svc"
	}
	return "istiod-" + d.Revision + ".istio-system.svc"
}

// Socket is the Unix socket in Dir that reaches istiod's port.
func (d *Istiod) Socket(port string) string {
	return filepath.Join(d.Dir, map[string]string{istiodGRPCS: "grpcs.sock", istiodHTTP: "http.sock", istiodWebhook: "webhook.sock"}[port])
}

// Get asks istiod's HTTP port (readiness, debug endpoints).
func (d *Istiod) Get(ctx context.Context, path string) (int, []byte, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.Socket(istiodHTTP))
	}}}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://istiod"+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// ConnectedProxies are the connections of istiod's XDS server, from its debug endpoint: each
// is the proxy's node ID, "-", a connection number.
func (d *Istiod) ConnectedProxies(ctx context.Context) ([]string, error) {
	status, body, err := d.Get(ctx, "/debug/connections")
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("istiod /debug/connections: %d %s", status, body)
	}
	var conns struct {
		Connected []struct {
			ConnectionID string `json:"connectionId"`
		} `json:"clients"`
	}
	if err := json.Unmarshal(body, &conns); err != nil {
		return nil, fmt.Errorf("istiod /debug/connections: %w: %s", err, body)
	}
	var ids []string
	for _, c := range conns.Connected {
		ids = append(ids, c.ConnectionID)
	}
	return ids, nil
}

// InjectionRequested reports whether istiod's injector was asked about a Pod of namespace ns
// (it logs every request, whether it injects or not).
func (d *Istiod) InjectionRequested(ns string) bool {
	return strings.Contains(d.log.String(), "path=/inject pod="+ns+"/")
}

// Log is the end of istiod's output, for failure messages.
func (d *Istiod) Log(n int) string { return tail(d.log.String(), n) }

// Stop ends istiod and its forwards, and removes what it registered.
func (d *Istiod) Stop() {
	if d.proc != nil {
		d.proc.Stop()
	}
	for i := len(d.stops) - 1; i >= 0; i-- {
		d.stops[i]()
	}
	d.stops = nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
