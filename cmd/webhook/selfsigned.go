package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	typedadmissionv1 "k8s.io/client-go/kubernetes/typed/admissionregistration/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
)

// selfSignedOptions are the flags of `serve --self-signed`, the mode for clusters without
// cert-manager (manifests/components/self-signed).
type selfSignedOptions struct {
	enabled           bool
	serviceName       string
	serviceNamespace  string
	dnsNames          []string
	webhookConfigName string
	validity          time.Duration
}

func (o *selfSignedOptions) bindFlags(f *pflag.FlagSet) {
	namespace := os.Getenv("POD_NAMESPACE")
	if namespace == "" {
		namespace = "emissary-istio-system"
	}
	f.BoolVar(&o.enabled, "self-signed", false, "make a CA and serving certificate in --cert-dir when it holds no valid one, and keep the caBundle of --webhook-config-name trusting that CA (for clusters without cert-manager)")
	f.StringVar(&o.serviceName, "service-name", "emissary-istio-webhook", "with --self-signed: the Service the API server calls the webhook through")
	f.StringVar(&o.serviceNamespace, "service-namespace", namespace, "with --self-signed: the Service's namespace (the default is $POD_NAMESPACE when set)")
	f.StringSliceVar(&o.dnsNames, "dns-names", nil, "with --self-signed: the certificate's DNS names and IP addresses, instead of <service-name>.<service-namespace>.svc[.cluster.local]")
	f.StringVar(&o.webhookConfigName, "webhook-config-name", "emissary-istio-webhook", "with --self-signed: the MutatingWebhookConfiguration whose caBundle to keep")
	f.DurationVar(&o.validity, "cert-validity", 365*24*time.Hour, "with --self-signed: validity of the CA and serving certificate; a new pair is made when a third of it is left")
}

// hosts are the names the API server reaches the webhook by: <service>.<namespace>.svc is
// what it verifies for a service reference.
func (o *selfSignedOptions) hosts() []string {
	if len(o.dnsNames) > 0 {
		return o.dnsNames
	}
	svc := o.serviceName + "." + o.serviceNamespace + ".svc"
	return []string{svc, svc + ".cluster.local"}
}

// Timing of a caBundleKeeper.
const (
	// resyncPeriod re-checks the caBundle even without a watch event, as a backstop.
	resyncPeriod = time.Minute
	// retryPeriod follows a failed update (no permission yet, API server unreachable).
	retryPeriod = 5 * time.Second
	// maxPropagationDelay is how long a renewal waits between trusting the new CA and
	// serving the certificate it signed: every API server must have loaded the new caBundle.
	maxPropagationDelay = 5 * time.Second
)

// caBundleKeeper is the --self-signed mode: it makes sure the certificate directory holds a
// serving certificate (certs.Ensure), keeps every webhook of one MutatingWebhookConfiguration
// trusting its CA (at start, on every change of that configuration, and every
// resyncPeriod), and renews the certificate before it expires. It runs in the webhook's
// manager and is a readiness check, so a replica takes traffic only once it is trusted.
//
// Every replica has its own CA and puts it in front of the caBundle
// (certs.MergeCABundle), keeping the others', so replicas never undo each other's work
// and a renewal never fails an admission: the new CA is trusted before the new certificate
// is served, and the old one stays trusted.
type caBundleKeeper struct {
	webhooks typedadmissionv1.MutatingWebhookConfigurationInterface
	name     string
	certDir  string
	opts     certs.Options // hosts and validity of new certificates
	log      logr.Logger

	mu      sync.Mutex
	ca      []byte // the CA whose certificate is being served, or is about to be
	trusted atomic.Bool
	changed chan struct{} // a watch event: the configuration changed
}

// newCABundleKeeper makes sure certDir holds a serving certificate before the webhook
// server starts reading it.
func newCABundleKeeper(restCfg *rest.Config, o selfSignedOptions, certDir string, log logr.Logger) (*caBundleKeeper, error) {
	if o.validity < time.Second {
		return nil, fmt.Errorf("serve: --cert-validity must be at least 1s, got %s", o.validity)
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	k := &caBundleKeeper{
		webhooks: cs.AdmissionregistrationV1().MutatingWebhookConfigurations(),
		name:     o.webhookConfigName,
		certDir:  certDir,
		opts:     certs.Options{Hosts: o.hosts(), Validity: o.validity},
		log:      log,
		changed:  make(chan struct{}, 1),
	}
	ca, why, err := certs.Ensure(certDir, k.opts, k.renewBefore())
	if err != nil {
		return nil, fmt.Errorf("serve: self-signed certificate: %w", err)
	}
	if why != "" {
		log.Info("made a CA and serving certificate", "dir", certDir, "hosts", k.opts.Hosts, "because", why)
	} else {
		log.Info("using the certificate already in the directory", "dir", certDir)
	}
	k.ca = ca
	return k, nil
}

// addTo runs the keeper in mgr and makes readiness wait for the caBundle.
func (k *caBundleKeeper) addTo(mgr manager.Manager) error {
	if err := mgr.Add(k); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("ca-bundle", k.readyz)
}

// renewBefore is the time left at which a certificate is replaced: a third of its validity.
func (k *caBundleKeeper) renewBefore() time.Duration { return k.opts.Validity / 3 }

// NeedLeaderElection: every replica keeps its own CA trusted.
func (k *caBundleKeeper) NeedLeaderElection() bool { return false }

// Start implements manager.Runnable.
func (k *caBundleKeeper) Start(ctx context.Context) error {
	if err := k.watch(ctx); err != nil {
		return err
	}
	resync := time.NewTicker(resyncPeriod)
	defer resync.Stop()
	// Check a few dozen times per validity period, and at least every 10 minutes.
	renewal := time.NewTicker(min(k.opts.Validity/30, 10*time.Minute))
	defer renewal.Stop()
	for {
		var retryAfter <-chan time.Time
		// A configuration that does not exist yet is reported by the watch when it does.
		if err := k.sync(ctx); err != nil && !apierrors.IsNotFound(err) {
			retryAfter = time.After(retryPeriod)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-k.changed:
		case <-resync.C:
		case <-retryAfter:
		case <-renewal.C:
			k.renewIfDue(ctx)
		}
	}
}

// watch follows the one configuration by name: the list and watch select metadata.name, so
// RBAC with resourceNames allows them.
func (k *caBundleKeeper) watch(ctx context.Context) error {
	byName := fields.OneTermEqualSelector("metadata.name", k.name).String()
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = byName
			return k.webhooks.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = byName
			return k.webhooks.Watch(ctx, opts)
		},
	}
	informer := toolscache.NewSharedIndexInformer(lw, &admissionregistrationv1.MutatingWebhookConfiguration{}, 0, toolscache.Indexers{})
	poke := func() {
		select {
		case k.changed <- struct{}{}:
		default: // a check is already pending
		}
	}
	if _, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
	}); err != nil {
		return err
	}
	go informer.RunWithContext(ctx)
	return nil
}

// sync makes every webhook of the configuration trust the current CA, and records for the
// readiness check whether they do.
func (k *caBundleKeeper) sync(ctx context.Context) error {
	ca := k.currentCA()
	var seen, trusted bool // whether the configuration was read, and trusted the CA then
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		mwc, err := k.webhooks.Get(ctx, k.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		seen, trusted = true, true
		changed := false
		for i := range mwc.Webhooks {
			cc := &mwc.Webhooks[i].ClientConfig
			trusted = trusted && certs.Trusts(cc.CABundle, ca)
			merged, ch, err := certs.MergeCABundle(cc.CABundle, ca, certs.MaxBundleCAs, time.Now())
			if err != nil {
				return err
			}
			cc.CABundle, changed = merged, changed || ch
		}
		if !changed {
			return nil
		}
		if _, err := k.webhooks.Update(ctx, mwc, metav1.UpdateOptions{FieldManager: "emissary-istio-webhook"}); err != nil {
			return err
		}
		trusted = true
		k.log.Info("updated the caBundle to trust this replica's CA", "mutatingWebhookConfiguration", k.name)
		return nil
	})
	switch {
	case apierrors.IsNotFound(err):
		k.trusted.Store(false)
		// Created later (kubectl apply orders it last): the watch reports it.
		k.log.Info("waiting for the MutatingWebhookConfiguration", "name", k.name)
		return err
	case seen:
		k.trusted.Store(trusted)
	}
	// Otherwise the API server did not answer: readiness keeps what was last known, so a
	// hiccup does not take every replica out of the Service at once.
	if err != nil && ctx.Err() == nil {
		k.log.Error(err, "cannot update the caBundle; retrying", "mutatingWebhookConfiguration", k.name, "in", retryPeriod)
	}
	return err
}

// renewIfDue replaces the certificate when a third of its validity is left. The new CA is
// made trusted first and the old one stays trusted, so whichever certificate an API server
// sees verifies.
func (k *caBundleKeeper) renewIfDue(ctx context.Context) {
	if !certs.NeedsRenewal(k.certDir, k.opts.Hosts, k.renewBefore(), time.Now()) {
		return
	}
	next, err := certs.Generate(k.opts)
	if err != nil {
		k.log.Error(err, "renewing the self-signed certificate")
		return
	}
	previous := k.currentCA()
	k.setCA(next.CACert)
	if err := k.sync(ctx); err != nil {
		k.setCA(previous) // keep serving the old one; try again at the next check
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(min(maxPropagationDelay, k.opts.Validity/20)):
	}
	if err := next.WriteDir(k.certDir); err != nil {
		k.log.Error(err, "writing the renewed certificate")
		return
	}
	k.log.Info("renewed the self-signed CA and serving certificate", "dir", k.certDir, "notAfter", next.NotAfter)
}

func (k *caBundleKeeper) readyz(*http.Request) error {
	if !k.trusted.Load() {
		return errors.New("the caBundle of MutatingWebhookConfiguration " + k.name + " does not trust this replica's CA yet")
	}
	return nil
}

func (k *caBundleKeeper) currentCA() []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.ca
}

func (k *caBundleKeeper) setCA(ca []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ca = ca
}
