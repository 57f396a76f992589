// Package envtest is the one harness every integration suite, the end-to-end kubectl tests
// and `make demo` use: a real kube-apiserver and etcd (controller-runtime's envtest, with the
// binaries `make envtest` builds from source), the project's own Mapping and TLSContext
// CRDs, the webhook server running in-process on 127.0.0.1, registered through the shipped
// MutatingWebhookConfiguration rewritten to a URL with a generated CA, and a kubeconfig file
// for the real kubectl.
package envtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mutate"
)

// Options change what Start brings up.
type Options struct {
	// Config is the webhook's configuration; nil means inject.DefaultConfig().
	Config *inject.Config
	// CRDDirs replaces the project's own test CRDs (test/envtest/crds).
	CRDDirs []string
	// NoWebhook starts only the control plane: no server, no registration.
	NoWebhook bool
	// Metrics for the in-process server; nil means a fresh unregistered set, so several
	// environments in one process do not collide on the global registry.
	Metrics *mutate.Metrics
	// APIServerFlags are set on kube-apiserver's command line (name without "--", value).
	APIServerFlags map[string]string
}

// Env is a running control plane with the webhook registered.
type Env struct {
	Config      *rest.Config
	Client      client.Client
	Kubeconfig  string // admin kubeconfig for kubectl
	KubectlPath string
	Dir         string // scratch directory, removed by Stop

	// Set unless Options.NoWebhook.
	Server     *mutate.Server
	WebhookURL string // https://127.0.0.1:PORT
	CABundle   []byte
	CertDir    string

	control *crenvtest.Environment
	stop    context.CancelFunc
	stopped chan error
}

// RepoRoot is the directory holding the project's go.mod.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// AssetsDir is where kube-apiserver, etcd and kubectl are: $KUBEBUILDER_ASSETS as the
// Makefile sets it, else the newest bin/k8s/<version> that has all three.
func AssetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" && hasAssets(dir) {
		return dir, nil
	}
	if dir := NewestVersionDir(filepath.Join(RepoRoot(), "bin", "k8s"), hasAssets); dir != "" {
		return dir, nil
	}
	return "", errors.New("envtest: kube-apiserver, etcd and kubectl not found; run `make envtest` (or `make test`, which builds them)")
}

// NewestVersionDir is the subdirectory of root, among those complete says are complete, whose
// name is the highest version (bin/k8s/v1.37.2, bin/istio/1.29.1), compared as versions (a
// string sort puts v1.9 after v1.37); "" when there is none. A name that is not a version is
// not something the Makefile built.
func NewestVersionDir(root string, complete func(dir string) bool) string {
	entries, _ := os.ReadDir(root)
	var newest string
	var newestVersion *version.Version
	for _, e := range entries {
		v, err := version.ParseSemantic(e.Name())
		dir := filepath.Join(root, e.Name())
		if err != nil || !complete(dir) || (newestVersion != nil && !v.GreaterThan(newestVersion)) {
			continue
		}
		newest, newestVersion = dir, v
	}
	return newest
}

func hasAssets(dir string) bool {
	for _, name := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return false
		}
	}
	return true
}

// RunSuite is the TestMain of a package whose tests share one Env: it starts the Env with
// opts into *env, runs the tests (m is the *testing.M), stops it and returns the exit code
// for os.Exit.
func RunSuite(m interface{ Run() int }, opts Options, env **Env) int {
	e, err := Start(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping envtest:", err)
	}
	return code
}

// Start brings up the control plane and, unless opts.NoWebhook, the webhook.
func Start(opts Options) (_ *Env, err error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "emissary-istio-envtest-")
	if err != nil {
		return nil, err
	}
	crdDirs := opts.CRDDirs
	if crdDirs == nil {
		crdDirs = []string{filepath.Join(RepoRoot(), "test", "envtest", "crds")}
	}
	e := &Env{
		Dir:         dir,
		KubectlPath: filepath.Join(assets, "kubectl"),
		control: &crenvtest.Environment{
			BinaryAssetsDirectory: assets,
			CRDDirectoryPaths:     crdDirs,
			ErrorIfCRDPathMissing: true,
		},
	}
	defer func() {
		if err != nil {
			_ = e.Stop()
		}
	}()
	for name, value := range opts.APIServerFlags {
		e.control.ControlPlane.GetAPIServer().Configure().Set(name, value)
	}
	if e.Config, err = e.control.Start(); err != nil {
		return nil, fmt.Errorf("envtest: starting kube-apiserver and etcd: %w", err)
	}
	if e.Client, err = client.New(e.Config, client.Options{Scheme: clientgoscheme.Scheme}); err != nil {
		return nil, err
	}
	if err := e.writeKubeconfig(); err != nil {
		return nil, err
	}
	if opts.NoWebhook {
		return e, nil
	}
	if err := e.startWebhook(opts); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Env) writeKubeconfig() error {
	admin, err := e.control.AddUser(crenvtest.User{Name: "envtest-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("envtest: admin user: %w", err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	e.Kubeconfig = filepath.Join(e.Dir, "kubeconfig")
	return os.WriteFile(e.Kubeconfig, kc, 0o600)
}

func (e *Env) startWebhook(opts Options) error {
	cfg := opts.Config
	if cfg == nil {
		cfg = inject.DefaultConfig()
	}
	metrics := opts.Metrics
	if metrics == nil {
		metrics = mutate.NewMetrics(nil)
	}
	bundle, err := certs.Generate(certs.Options{Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		return err
	}
	e.CertDir, e.CABundle = filepath.Join(e.Dir, "certs"), bundle.CACert
	if err := bundle.WriteDir(e.CertDir); err != nil {
		return err
	}
	port, err := FreePort()
	if err != nil {
		return err
	}
	e.WebhookURL = "https://127.0.0.1:" + strconv.Itoa(port)
	e.Server, err = mutate.NewServer(e.Config, mutate.Options{
		Host: "127.0.0.1", Port: port, CertDir: e.CertDir,
		MetricsAddr: "0", HealthAddr: "0", Config: cfg, Metrics: metrics,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.stop, e.stopped = cancel, make(chan error, 1)
	go func() { e.stopped <- e.Server.Start(ctx) }()
	if err := e.Register(); err != nil {
		return err
	}
	return e.WaitForWebhook(30 * time.Second)
}

// WebhookConfiguration is the shipped MutatingWebhookConfiguration
// (manifests/base/mutatingwebhookconfiguration.yaml), pointed at url with caBundle instead
// of the in-cluster Service, so every suite exercises the real selectors and matchConditions.
func WebhookConfiguration(url string, caBundle []byte) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	raw, err := os.ReadFile(filepath.Join(RepoRoot(), "manifests", "base", "mutatingwebhookconfiguration.yaml"))
	if err != nil {
		return nil, err
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(raw, mwc); err != nil {
		return nil, fmt.Errorf("envtest: manifests/base/mutatingwebhookconfiguration.yaml: %w", err)
	}
	return mwc, PointAt(mwc, url, caBundle)
}

// PointAt rewrites every webhook of mwc from its in-cluster Service to url plus the Service's
// path, with caBundle: how the suites register a shipped configuration (the kustomize one,
// the Helm chart's) with the in-process server.
func PointAt(mwc *admissionregistrationv1.MutatingWebhookConfiguration, url string, caBundle []byte) error {
	for i := range mwc.Webhooks {
		cc := &mwc.Webhooks[i].ClientConfig
		if cc.Service == nil || cc.Service.Path == nil {
			return fmt.Errorf("envtest: webhook %s has no service path to rewrite", mwc.Webhooks[i].Name)
		}
		u := url + *cc.Service.Path
		cc.Service, cc.URL, cc.CABundle = nil, &u, caBundle
	}
	return nil
}

// Register creates (or replaces) the webhook configuration pointing at this Env's server.
func (e *Env) Register() error {
	mwc, err := WebhookConfiguration(e.WebhookURL, e.CABundle)
	if err != nil {
		return err
	}
	ctx := context.Background()
	existing := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := e.Client.Get(ctx, client.ObjectKeyFromObject(mwc), existing); err == nil {
		mwc.ResourceVersion = existing.ResourceVersion
		return e.Client.Update(ctx, mwc)
	}
	return e.Client.Create(ctx, mwc)
}

// WaitForWebhook returns once the API server calls the webhook: a server-side dry-run of an
// Emissary Deployment comes back injected. (The API server picks up a new webhook
// configuration asynchronously.)
func (e *Env) WaitForWebhook(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		probe := ProbeDeployment()
		lastErr = e.Client.Create(context.Background(), probe, client.DryRunAll)
		if lastErr == nil && len(probe.Spec.Template.Spec.Containers) == 2 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("envtest: webhook not called by the API server within %s (last error: %v)", timeout, lastErr)
}

// ProbeDeployment is a minimal Emissary Deployment in namespace default.
func ProbeDeployment() *appsv1.Deployment {
	labels := map[string]string{"app": "webhook-probe"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "webhook-probe", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "ambassador", Image: "docker.io/emissaryingress/emissary:3.10.0",
				}}},
			},
		},
	}
}

// Kubectl runs the real kubectl against this control plane. stdin may be nil.
func (e *Env) Kubectl(stdin []byte, args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(e.KubectlPath, append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("kubectl %v: %w: %s", args, err, errOut.String())
	}
	return out.String(), errOut.String(), err
}

// StopWebhook stops the in-process server, leaving the control plane and the registration.
func (e *Env) StopWebhook() error {
	if e.stop == nil {
		return nil
	}
	e.stop()
	e.stop = nil
	return <-e.stopped
}

// Stop tears everything down.
func (e *Env) Stop() error {
	errs := []error{e.StopWebhook()}
	if e.control != nil && e.Config != nil {
		errs = append(errs, e.control.Stop())
	}
	errs = append(errs, os.RemoveAll(e.Dir))
	return errors.Join(errs...)
}

// FreePort asks the kernel for a free port on 127.0.0.1 (it may be taken again before use,
// as with any such probe; tests bind it at once).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RestartWebhook stops the in-process webhook server and starts a new one on the same
// address with the same certificates and configuration, as a restarted pod would be; the
// registration is left alone. It returns once the new server accepts TLS connections and its
// namespace cache has synced (what its readiness probe waits for).
func (e *Env) RestartWebhook() error {
	if e.Server == nil {
		return errors.New("envtest: RestartWebhook: this Env has no webhook (Options.NoWebhook)")
	}
	cfg := e.Server.Config.Load()
	if err := e.StopWebhook(); err != nil {
		return fmt.Errorf("envtest: stopping the webhook: %w", err)
	}
	u, err := url.Parse(e.WebhookURL)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return err
	}
	srv, err := mutate.NewServer(e.Config, mutate.Options{
		Host: "127.0.0.1", Port: port, CertDir: e.CertDir,
		MetricsAddr: "0", HealthAddr: "0", Config: cfg, Metrics: mutate.NewMetrics(nil),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.Server, e.stop, e.stopped = srv, cancel, make(chan error, 1)
	go func() { e.stopped <- srv.Start(ctx) }()

	deadline := time.Now().Add(30 * time.Second)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CABundle)
	for {
		conn, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("envtest: restarted webhook not listening on %s: %w", u.Host, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	syncCtx, cancelSync := context.WithDeadline(context.Background(), deadline)
	defer cancelSync()
	if !srv.Manager.GetCache().WaitForCacheSync(syncCtx) {
		return errors.New("envtest: restarted webhook's namespace cache did not sync")
	}
	return nil
}

// StopAPIServer stops kube-apiserver, leaving etcd (and the webhook) running. StartAPIServer
// brings it back on the same address with the same serving certificate and client CA, so
// existing clients (e.Config, the kubeconfig, the webhook's cache) reconnect by themselves.
//
// On SIGTERM kube-apiserver stops listening at once but waits up to a minute for open
// watches, and envtest kills it after its stop timeout (20s for the first process). A kill
// after the timeout counts as stopped, and every kube-apiserver StartAPIServer starts gets a
// stop timeout of apiServerStopTimeout: stopping one that clients watch is then a crash-like
// stop after a few seconds.
func (e *Env) StopAPIServer() error {
	s := e.control.ControlPlane.APIServer
	// envtest generates a new serving CA into a fresh directory on every start unless the
	// directory is given and already holds the certificate: keep a copy to restart from.
	keep := filepath.Join(e.Dir, "apiserver")
	if s.CertDir != keep {
		if err := os.MkdirAll(keep, 0o700); err != nil {
			return err
		}
		entries, err := os.ReadDir(s.CertDir)
		if err != nil {
			return err
		}
		for _, ent := range entries {
			if !ent.Type().IsRegular() {
				continue
			}
			b, err := os.ReadFile(filepath.Join(s.CertDir, ent.Name()))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(keep, ent.Name()), b, 0o600); err != nil {
				return err
			}
		}
	}
	err := s.Stop()
	s.CertDir, s.StopTimeout = keep, apiServerStopTimeout
	if err != nil && !strings.Contains(err.Error(), "timeout waiting for process") {
		return fmt.Errorf("envtest: stopping kube-apiserver: %w", err)
	}
	// Killed or exited: wait until its port is free for the next start.
	addr := net.JoinHostPort(s.SecureServing.Address, s.SecureServing.Port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return nil
		}
		conn.Close()
		if time.Now().After(deadline) {
			return fmt.Errorf("envtest: kube-apiserver still listening on %s after it was stopped", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// apiServerStopTimeout: see StopAPIServer.
const apiServerStopTimeout = 3 * time.Second

// StartAPIServer starts kube-apiserver again after StopAPIServer and waits until it is healthy.
func (e *Env) StartAPIServer() error {
	if err := e.control.ControlPlane.APIServer.Start(); err != nil {
		return fmt.Errorf("envtest: starting kube-apiserver: %w", err)
	}
	return nil
}
