// Package selfsigned runs `webhook serve --self-signed`, the mode for clusters without
// cert-manager (manifests/components/self-signed): each replica makes its own CA and serving
// certificate (package certs), keeps the caBundle of the webhook configuration trusting that
// CA, and renews both before they expire. It is a manager.Runnable and a readiness check,
// and talks to the API server only about that one MutatingWebhookConfiguration.
package selfsigned

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
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

	"github.com/emissary-istio/emissary-istio-webhook/certs"
)

// Options say where the certificate lives, what it is for and which configuration trusts it.
type Options struct {
	// CertDir is the directory the webhook server reads tls.crt and tls.key from.
	CertDir string
	// Hosts are the names the API server reaches the webhook by.
	Hosts []string
	// Validity of the CA and serving certificate; a new pair is made when a third is left.
	Validity time.Duration
	// WebhookConfigName is the MutatingWebhookConfiguration whose caBundle is kept.
	WebhookConfigName string
	// MaxCAs is how many CAs the caBundle keeps (certs.MergeCABundle); 0 means
	// certs.MaxBundleCAs. It must hold every live replica's CA, old and new during renewals:
	// with fewer, replicas push each other's CA out in turn and never settle.
	MaxCAs int
	// ResyncPeriod is how often the caBundle is re-checked without a watch event, as a
	// backstop; zero means DefaultResyncPeriod. Tests shorten it to see a resync happen.
	ResyncPeriod time.Duration
}

// DefaultResyncPeriod is the ResyncPeriod of a zero Options.
const DefaultResyncPeriod = time.Minute

// Timing of a Keeper.
const (
	// retryPeriod follows a failed update (no permission yet, API server unreachable).
	retryPeriod = 5 * time.Second
	// maxPropagationDelay is how long a renewal waits between trusting the new CA and
	// serving the certificate it signed: every API server must have loaded the new caBundle.
	maxPropagationDelay = 5 * time.Second
)

// Keeper is the --self-signed mode: it makes sure the certificate directory holds a
// serving certificate (certs.Ensure), keeps every webhook of one MutatingWebhookConfiguration
// trusting its CA (at start, on every change of that configuration, and every
// ResyncPeriod), and renews the certificate before it expires. It runs in the webhook's
// manager (Start) and is a readiness check (Ready), so a replica takes traffic only once
// it is trusted.
//
// Every replica has its own CA and puts it in front of the caBundle
// (certs.MergeCABundle), keeping the others', so replicas never undo each other's work
// and a renewal never fails an admission: the new CA is trusted before the new certificate
// is served, and the old one stays trusted.
type Keeper struct {
	webhooks typedadmissionv1.MutatingWebhookConfigurationInterface
	name     string
	certDir  string
	maxCAs   int
	opts     certs.Options // hosts and validity of new certificates
	resync   time.Duration
	log      logr.Logger

	mu      sync.Mutex
	ca      []byte // the CA whose certificate is being served, or is about to be
	trusted atomic.Bool
	changed chan struct{} // a watch event: the configuration changed
}

// New makes sure opts.CertDir holds a serving certificate, before the webhook server starts
// reading it.
func New(restCfg *rest.Config, opts Options, log logr.Logger) (*Keeper, error) {
	if opts.Validity < time.Second {
		return nil, fmt.Errorf("selfsigned: the validity must be at least 1s, got %s", opts.Validity)
	}
	if opts.MaxCAs < 0 || opts.MaxCAs == 1 {
		return nil, fmt.Errorf("selfsigned: the caBundle must keep at least 2 CAs (a renewal trusts the old and the new one), got %d", opts.MaxCAs)
	}
	if opts.ResyncPeriod < 0 {
		return nil, fmt.Errorf("selfsigned: the resync period must not be negative, got %s", opts.ResyncPeriod)
	}
	if opts.ResyncPeriod == 0 {
		opts.ResyncPeriod = DefaultResyncPeriod
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("selfsigned: %w", err)
	}
	k := &Keeper{
		webhooks: cs.AdmissionregistrationV1().MutatingWebhookConfigurations(),
		name:     opts.WebhookConfigName,
		certDir:  opts.CertDir,
		maxCAs:   cmp.Or(opts.MaxCAs, certs.MaxBundleCAs),
		opts:     certs.Options{Hosts: opts.Hosts, Validity: opts.Validity},
		resync:   opts.ResyncPeriod,
		log:      log,
		changed:  make(chan struct{}, 1),
	}
	ca, why, err := certs.Ensure(k.certDir, k.opts, k.renewBefore())
	if err != nil {
		return nil, fmt.Errorf("selfsigned: certificate: %w", err)
	}
	if why != "" {
		log.Info("made a CA and serving certificate", "dir", k.certDir, "hosts", k.opts.Hosts, "because", why)
	} else {
		log.Info("using the certificate already in the directory", "dir", k.certDir)
	}
	k.ca = ca
	return k, nil
}

// renewBefore is the time left at which a certificate is replaced: a third of its validity.
func (k *Keeper) renewBefore() time.Duration { return k.opts.Validity / 3 }

// NeedLeaderElection: every replica keeps its own CA trusted.
func (k *Keeper) NeedLeaderElection() bool { return false }

// Start implements manager.Runnable.
func (k *Keeper) Start(ctx context.Context) error {
	if err := k.watch(ctx); err != nil {
		return err
	}
	resync := time.NewTicker(k.resync)
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
			k.log.V(1).Info("resync: re-checking the caBundle", "mutatingWebhookConfiguration", k.name)
		case <-retryAfter:
		case <-renewal.C:
			k.renewIfDue(ctx)
		}
	}
}

// watch follows the one configuration by name: the list and watch select metadata.name, so
// RBAC with resourceNames allows them.
func (k *Keeper) watch(ctx context.Context) error {
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
func (k *Keeper) sync(ctx context.Context) error {
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
			merged, ch, err := certs.MergeCABundle(cc.CABundle, ca, k.maxCAs, time.Now())
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

// renewIfDue replaces the certificate when certs.Verify, the rule New applies at start,
// rejects it: a third of its validity is left, or ca.crt, the key or the hosts no longer go
// with it. The new CA is made trusted first and the old one stays trusted, so whichever
// certificate an API server sees verifies.
func (k *Keeper) renewIfDue(ctx context.Context) {
	if _, err := certs.Verify(k.certDir, k.opts.Hosts, k.renewBefore(), time.Now()); err == nil {
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
		// The previous certificate is still the one served (WriteDir's promise): keep its
		// CA trusted, and try again at the next check.
		k.setCA(previous)
		k.log.Error(err, "writing the renewed certificate")
		return
	}
	k.log.Info("renewed the self-signed CA and serving certificate", "dir", k.certDir, "notAfter", next.NotAfter)
}

// Ready is the readiness check ("ca-bundle"): it fails until every webhook of the
// configuration trusts the CA whose certificate is served.
func (k *Keeper) Ready(*http.Request) error {
	if !k.trusted.Load() {
		return errors.New("the caBundle of MutatingWebhookConfiguration " + k.name + " does not trust this replica's CA yet")
	}
	return nil
}

func (k *Keeper) currentCA() []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.ca
}

func (k *Keeper) setCA(ca []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ca = ca
}
