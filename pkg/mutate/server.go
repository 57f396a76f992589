package mutate

import (
	"context"
	"errors"
	"fmt"
	"net/http"

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
}

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
	mgr, err := manager.New(restCfg, manager.Options{
		Scheme: scheme,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:     opts.Host,
			Port:     opts.Port,
			CertDir:  opts.CertDir,
			CertName: certs.CertFile,
			KeyName:  certs.KeyFile,
		}),
		Metrics:                metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress: opts.HealthAddr,
		// Only namespace metadata is ever read; nothing else is cached.
		Cache: cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
	})
	if err != nil {
		return nil, fmt.Errorf("mutate: creating manager: %w", err)
	}
	s := &Server{Manager: mgr, Config: NewConfigHolder(opts.Config)}
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
	hook := mgr.GetWebhookServer()
	hook.Register(DeploymentPath, &admission.Webhook{Handler: &DeploymentHandler{Config: s.Config, Metrics: m}})
	hook.Register(MappingPath, &admission.Webhook{Handler: &MappingHandler{
		Config: s.Config, Namespaces: NamespaceCache{Reader: mgr.GetCache()}, Metrics: m,
	}})

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", hook.StartedChecker()); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("namespace-cache", func(*http.Request) error {
		if !informer.HasSynced() {
			return errors.New("namespace cache has not synced")
		}
		return nil
	})
}

// Start runs the server until ctx ends.
func (s *Server) Start(ctx context.Context) error { return s.Manager.Start(ctx) }
