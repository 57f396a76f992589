package mutate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
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
}

// Server is a manager with both handlers registered and a metadata-only Namespace cache.
type Server struct {
	Manager manager.Manager
	Config  *ConfigHolder
	// Mesh is the view of the cluster's Istio the workload handlers render from.
	Mesh *MeshCache

	freshness *cacheFreshness
}

// cacheWatchGrace is how long the namespace cache may be without an open watch before
// readiness fails; see cacheFreshness.
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
	meshCache := &MeshCache{Namespace: opts.Config.IstioNamespace, errs: &listErrors{}}
	byObject := meshCacheObjects(meshCache.Namespace)
	byObject[NamespaceObject()] = cache.ByObject{Transform: TrimNamespace}
	mgr, err := manager.New(restCfg, manager.Options{
		Scheme: scheme,
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
			ByObject:         byObject,
			NewInformer:      meshCache.wrapInformers(freshness.newInformer),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("mutate: creating manager: %w", err)
	}
	meshCache.Reader, meshCache.APIReader = mgr.GetCache(), mgr.GetAPIReader()
	s := &Server{Manager: mgr, Config: NewConfigHolder(opts.Config), Mesh: meshCache, freshness: freshness}
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
	if err := s.Mesh.start(context.Background(), mgr.GetCache()); err != nil {
		return err
	}
	hook := mgr.GetWebhookServer()
	hook.Register(DeploymentPath, postOnly(&admission.Webhook{Handler: &WorkloadHandler{Config: s.Config, Metrics: m, Kinds: DeploymentPathKinds, Mesh: s.Mesh}}))
	hook.Register(PodPath, postOnly(&admission.Webhook{Handler: &WorkloadHandler{Config: s.Config, Metrics: m, Kinds: PodPathKinds, Mesh: s.Mesh}}))
	hook.Register(MappingPath, postOnly(&admission.Webhook{Handler: &MappingHandler{
		Config: s.Config, Namespaces: NamespaceCache{Reader: mgr.GetCache()}, Metrics: m,
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
	// Ready once the namespace cache has synced, and only while it is current: a cache cut
	// off from the API server, or waiting to re-list, would answer Mapping admissions from
	// stale labels.
	return mgr.AddReadyzCheck("namespace-cache", func(*http.Request) error {
		if !informer.HasSynced() {
			return errors.New("namespace cache has not synced")
		}
		if informer.IsStopped() {
			return errors.New("namespace cache informer has stopped")
		}
		return s.freshness.check()
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

// Start runs the server until ctx ends.
func (s *Server) Start(ctx context.Context) error { return s.Manager.Start(ctx) }
