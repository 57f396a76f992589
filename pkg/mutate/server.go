package mutate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
)

// Options configure the serving side of the webhook.
type Options struct {
	// Host and Port the HTTPS server listens on.
	Host string
	Port int
	// CertDir holds tls.crt and tls.key; controller-runtime's certwatcher reloads them when
	// they change on disk (a cert-manager renewal, or a rotation in a test).
	CertDir string
	// MetricsAddr and HealthAddr are the Prometheus and probe listeners; "0" disables one.
	MetricsAddr string
	HealthAddr  string
	// Config is the initial configuration.
	Config *inject.Config
	// Metrics defaults to DefaultMetrics.
	Metrics *Metrics
	// ShutdownDelay is how long the server keeps serving, unready, once told to stop (see
	// Server.Start); zero stops at once.
	ShutdownDelay time.Duration
	// ShutdownTimeout bounds the wait for in-flight reviews after the delay; zero means
	// controller-runtime's default (30s).
	ShutdownTimeout time.Duration
}

// Server is a manager with both handlers registered and a metadata-only Namespace cache.
type Server struct {
	Manager manager.Manager
	Config  *ConfigHolder
	// Mesh is the view of the cluster's Istio the workload handlers render from.
	Mesh *MeshCache

	freshness     *cacheFreshness
	shutdownDelay time.Duration
	stopping      atomic.Bool
}

// cacheWatchGrace is how long the namespace cache may be without an open watch before it
// counts as stale, and Mapping reviews that need it are refused; see cacheFreshness.
const cacheWatchGrace = 3 * time.Second

// NewServer builds the manager that `webhook serve` runs; the envtest suites and the demo run
// the very same thing in-process.
func NewServer(restCfg *rest.Config, opts Options) (*Server, error) {
	if opts.Config == nil {
		return nil, errors.New("mutate: Options.Config is required")
	}
	if opts.Metrics == nil {
		opts.Metrics = DefaultMetrics
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	// The namespace informer lists and watches through freshness, which readiness reads.
	freshness := newCacheFreshness(cacheWatchGrace, time.Now)
	// The mesh view: Istio's injector webhooks and its namespace's ConfigMaps (meshcache.go).
	meshCache, err := newMeshCache(restCfg, opts.Config.IstioNamespace)
	if err != nil {
		return nil, err
	}
	var gracefulTimeout *time.Duration
	if opts.ShutdownTimeout > 0 {
		gracefulTimeout = &opts.ShutdownTimeout
	}
	mgr, err := manager.New(restCfg, manager.Options{
		Scheme:                  scheme,
		GracefulShutdownTimeout: gracefulTimeout,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:     opts.Host,
			Port:     opts.Port,
			CertDir:  opts.CertDir,
			CertName: certs.CertFile,
			KeyName:  certs.KeyFile,
			// Go's default for servers already; stated so that no GODEBUG can lower it.
			TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }},
		}),
		Metrics:                metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress: opts.HealthAddr,
		// Only namespace metadata is ever read, and of it only names and labels (TrimNamespace).
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject:         map[client.Object]cache.ByObject{NamespaceObject(): {Transform: TrimNamespace}},
			NewInformer:      freshness.newInformer,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("mutate: creating manager: %w", err)
	}
	meshCache.Reader, meshCache.APIReader = mgr.GetCache(), mgr.GetAPIReader()
	s := &Server{Manager: mgr, Config: NewConfigHolder(opts.Config), Mesh: meshCache, freshness: freshness, shutdownDelay: opts.ShutdownDelay}
	if err := s.register(opts.Metrics); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) register(m *Metrics) error {
	mgr := s.Manager
	// Ask for the informer now, so it starts with the manager and readiness can wait for it,
	// instead of being created lazily by the first Mapping admission.
	informer, err := mgr.GetCache().GetInformer(context.Background(), NamespaceObject())
	if err != nil {
		return fmt.Errorf("mutate: namespace informer: %w", err)
	}
	if err := mgr.Add(s.Mesh); err != nil {
		return fmt.Errorf("mutate: mesh cache: %w", err)
	}
	hook := mgr.GetWebhookServer()
	hook.Register(DeploymentPath, s.closeWhenStopping(&admission.Webhook{Handler: &WorkloadHandler{Config: s.Config, Metrics: m, Kinds: DeploymentPathKinds, Mesh: s.Mesh}}))
	hook.Register(PodPath, s.closeWhenStopping(&admission.Webhook{Handler: &WorkloadHandler{Config: s.Config, Metrics: m, Kinds: PodPathKinds, Mesh: s.Mesh}}))
	hook.Register(MappingPath, s.closeWhenStopping(&admission.Webhook{Handler: &MappingHandler{
		Config: s.Config, Namespaces: NamespaceCache{Reader: mgr.GetCache(), Current: s.namespacesCurrent(informer)}, Metrics: m,
	}}))

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", hook.StartedChecker()); err != nil {
		return err
	}
	// Ready once the mesh caches have synced (or are known unreadable: see MeshCache.Ready).
	if err := mgr.AddReadyzCheck("mesh-cache", func(*http.Request) error { return s.Mesh.Ready() }); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("shutdown", s.notStopping); err != nil {
		return err
	}
	// Ready once the namespace cache has synced: readiness is the ability to serve, and
	// afterwards a stale cache concerns only the Mapping reviews that need a namespace's
	// labels (they are refused until it is current again, see MappingHandler), never the
	// workload reviews, which need no cache: a flapping watch must not block Emissary's own
	// rollout. Refused Mapping reviews are counted as errors with reason "cache-stale".
	if err := mgr.AddReadyzCheck("namespace-cache", func(*http.Request) error {
		if !informer.HasSynced() {
			return errors.New("namespace cache has not synced")
		}
		return nil
	}); err != nil {
		return err
	}
	return nil
}

// namespacesCurrent is nil while the namespace cache holds the API server's labels: it has
// synced, its informer runs, and it is current (cacheFreshness).
func (s *Server) namespacesCurrent(informer cache.Informer) func() error {
	return func() error {
		if !informer.HasSynced() {
			return errors.New("namespace cache has not synced")
		}
		if informer.IsStopped() {
			return errors.New("namespace cache informer has stopped")
		}
		return s.freshness.check()
	}
}

// closeWhenStopping is postOnly(h), and once the server is stopping it answers with
// "Connection: close". kube-apiserver pools its connections to a webhook Service per Service,
// not per endpoint: it resolves an endpoint only when it dials, and goes on sending reviews
// over a kept-alive connection to a replica that has left the endpoints. Closing each such
// connection after its answer makes the next review dial again, to a ready replica, so that
// no connection is idle here when the server finally closes its listener.
func (s *Server) closeWhenStopping(h http.Handler) http.Handler {
	h = postOnly(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.stopping.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// postOnly answers anything but a POST with 405 Method Not Allowed. The API server only ever
// POSTs an AdmissionReview; without this, controller-runtime answers a GET with a 200 whose
// AdmissionResponse says "request body is empty", which is true but not what was wrong.
func postOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, fmt.Sprintf("method %s not allowed: POST an admission.k8s.io/v1 AdmissionReview (Content-Type: application/json)", r.Method), http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Start runs the server until ctx ends, then shuts down in the order that loses no review:
//
//  1. /readyz fails at once (check "shutdown"), so that the replica's endpoint is taken out of
//     the webhook Service, by the kubelet's readiness probe or, on a pod deletion, by the
//     endpoints controller;
//  2. for ShutdownDelay the server keeps answering every review, while each API server's view
//     of the endpoints catches up (until then some still send reviews here);
//  3. the manager stops: the HTTPS server closes its listener and waits for the reviews in
//     flight (at most the webhook's timeoutSeconds each, bounded by ShutdownTimeout), and the
//     process exits.
func (s *Server) Start(ctx context.Context) error {
	mgrCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Manager.Start(mgrCtx) }()
	select {
	case err := <-done: // failed to start, or stopped by itself
		return err
	case <-ctx.Done():
	}
	s.stopping.Store(true)
	if s.shutdownDelay > 0 {
		logf.Log.WithName("shutdown").Info("unready; serving while endpoints catch up", "delay", s.shutdownDelay)
		select {
		case <-time.After(s.shutdownDelay):
		case err := <-done:
			return err
		}
	}
	cancel()
	return <-done
}

// notStopping is the readiness check "shutdown": it fails from the moment the server is told
// to stop.
func (s *Server) notStopping(*http.Request) error {
	if s.stopping.Load() {
		return errors.New("shutting down: serving the reviews still sent here until the endpoints catch up")
	}
	return nil
}
