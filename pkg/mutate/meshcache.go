package mutate

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/watchlist"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mesh"
)

// MeshCache is the adapter between the informer caches and pkg/mesh: it hands pkg/inject the
// cluster's Istio (MeshView) for each workload admission at no API call. Two read-only
// informers feed it: Istio's MutatingWebhookConfigurations (only those labelled istio.io/rev)
// and the ConfigMaps of Istio's namespace (only their "values" and "mesh" keys are kept).
// Nothing is ever written.
//
// When the caches cannot list (no RBAC) or have not synced yet, the view is unavailable and
// says why; pkg/inject then keeps every existing injection (UpdatePatch) and renders a new one
// from the configuration's defaults with a warning.
type MeshCache struct {
	// Reader is the manager's cache; APIReader reads a namespace the cache has not seen yet
	// (created in the same apply as the workload).
	Reader    client.Reader
	APIReader client.Reader
	Namespace string // Istio's namespace

	mu   sync.Mutex
	key  string // fingerprint (names and resourceVersions) of what memo was built from
	memo *mesh.Mesh

	errs *listErrors
	// synced reports the informers' state; set by Start.
	webhooks, configMaps cache.Informer
}

// meshCacheObjects are the objects the mesh informers cache, with their selection.
func meshCacheObjects(istioNamespace string) map[client.Object]cache.ByObject {
	hasRev, err := labels.NewRequirement(mesh.LabelRev, selection.Exists, nil)
	if err != nil { // cannot happen: a constant, valid key
		panic(err)
	}
	return map[client.Object]cache.ByObject{
		&admissionregistrationv1.MutatingWebhookConfiguration{}: {Label: labels.NewSelector().Add(*hasRev)},
		&corev1.ConfigMap{}: {
			Namespaces: map[string]cache.Config{istioNamespace: {}},
			Transform:  trimConfigMap,
		},
	}
}

// trimConfigMap keeps of a ConfigMap only what pkg/mesh reads: the injector's "values" and
// the mesh config's "mesh" (the injector ConfigMap's templates are most of its size).
func trimConfigMap(in any) (any, error) {
	cm, ok := in.(*corev1.ConfigMap)
	if !ok {
		return in, nil
	}
	out := &corev1.ConfigMap{TypeMeta: cm.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: cm.Name, Namespace: cm.Namespace, ResourceVersion: cm.ResourceVersion, Labels: cm.Labels,
	}}
	if strings.HasPrefix(cm.Name, "istio") {
		for _, k := range []string{"values", "mesh"} {
			if v, ok := cm.Data[k]; ok {
				if out.Data == nil {
					out.Data = map[string]string{}
				}
				out.Data[k] = v
			}
		}
	}
	return out, nil
}

// start asks the cache for both informers, so they start with the manager.
func (c *MeshCache) start(ctx context.Context, informers cache.Informers) error {
	var err error
	if c.webhooks, err = informers.GetInformer(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{}); err != nil {
		return fmt.Errorf("mutate: MutatingWebhookConfiguration informer: %w", err)
	}
	if c.configMaps, err = informers.GetInformer(ctx, &corev1.ConfigMap{}); err != nil {
		return fmt.Errorf("mutate: ConfigMap informer: %w", err)
	}
	return nil
}

// unavailable says why the view cannot be read now ("" when it can).
func (c *MeshCache) unavailable() string {
	for _, i := range []struct {
		what     string
		informer cache.Informer
	}{{"MutatingWebhookConfigurations", c.webhooks}, {"ConfigMaps in namespace " + c.Namespace, c.configMaps}} {
		if i.informer == nil {
			return "the mesh caches have not started"
		}
		if i.informer.HasSynced() {
			continue
		}
		if err := c.errs.get(i.what); err != nil {
			return fmt.Sprintf("cannot list %s: %v", i.what, err)
		}
		return fmt.Sprintf("the cache of %s has not synced yet", i.what)
	}
	return ""
}

// Ready is the readiness check of the mesh caches: ready once both have synced, or once they
// are known not to be readable (then every admission says so, and keeps existing injections):
// a webhook that never became ready for want of RBAC to read Istio would block every
// Emissary rollout.
func (c *MeshCache) Ready() error {
	why := c.unavailable()
	if why == "" || strings.HasPrefix(why, "cannot list") && c.errs.forbidden() {
		return nil
	}
	return fmt.Errorf("mesh cache: %s", why)
}

// View is what pkg/inject gets for a workload in namespace.
func (c *MeshCache) View(ctx context.Context, namespace string) inject.MeshView {
	var v inject.MeshView
	labels, found, err := NamespaceCache{Reader: c.Reader}.NamespaceLabels(ctx, namespace)
	if err == nil && !found && c.APIReader != nil {
		labels, found, err = NamespaceCache{Reader: c.APIReader}.NamespaceLabels(ctx, namespace)
	}
	v.NamespaceLabels, v.NamespaceKnown = labels, err == nil && found
	if why := c.unavailable(); why != "" {
		// Without the ConfigMaps, a cluster whose webhooks show no Istio at all still has no
		// Istio: the Role in Istio's namespace is missing because there is no Istio yet.
		if c.webhooks != nil && c.webhooks.HasSynced() {
			var hooks admissionregistrationv1.MutatingWebhookConfigurationList
			if err := c.Reader.List(ctx, &hooks, client.UnsafeDisableDeepCopy); err == nil {
				if m := mesh.New(mesh.Objects{Namespace: c.Namespace, Webhooks: hooks.Items}); m.Empty() {
					v.Mesh = m
					return v
				}
			}
		}
		v.Unavailable = why
		return v
	}
	m, err := c.mesh(ctx)
	if err != nil {
		v.Unavailable = err.Error()
		return v
	}
	v.Mesh = m
	return v
}

// mesh builds the Mesh from the caches, again only when something in them changed.
func (c *MeshCache) mesh(ctx context.Context) (*mesh.Mesh, error) {
	var hooks admissionregistrationv1.MutatingWebhookConfigurationList
	var cms corev1.ConfigMapList
	// The cache's objects are only read here, so they are not copied.
	if err := c.Reader.List(ctx, &hooks, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("reading MutatingWebhookConfigurations from the cache: %w", err)
	}
	if err := c.Reader.List(ctx, &cms, client.InNamespace(c.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("reading ConfigMaps from the cache: %w", err)
	}
	var key strings.Builder
	for _, h := range hooks.Items {
		key.WriteString(h.Name + "/" + h.ResourceVersion + ";")
	}
	for _, cm := range cms.Items {
		key.WriteString(cm.Name + "/" + cm.ResourceVersion + ";")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.memo != nil && c.key == key.String() {
		return c.memo, nil
	}
	c.memo = mesh.New(mesh.Objects{Namespace: c.Namespace, Webhooks: hooks.Items, ConfigMaps: cms.Items})
	c.key = key.String()
	return c.memo, nil
}

// listErrors records the last error of each mesh informer's list, so that readiness and
// admissions can say "forbidden" instead of waiting for ever.
type listErrors struct {
	mu   sync.Mutex
	last map[string]error
}

func (l *listErrors) set(what string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]error{}
	}
	l.last[what] = err
}

func (l *listErrors) get(what string) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last[what]
}

// forbidden reports whether some list was refused for want of permission.
func (l *listErrors) forbidden() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, err := range l.last {
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			return true
		}
	}
	return false
}

// wrapInformers is a cache.Options.NewInformer that records the list errors of the mesh
// informers and hands every informer on to next.
func (c *MeshCache) wrapInformers(next func(toolscache.ListerWatcher, runtime.Object, time.Duration, toolscache.Indexers) toolscache.SharedIndexInformer) func(toolscache.ListerWatcher, runtime.Object, time.Duration, toolscache.Indexers) toolscache.SharedIndexInformer {
	return func(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
		switch obj.(type) {
		case *admissionregistrationv1.MutatingWebhookConfiguration:
			lw = &erroringListerWatcher{ListerWatcher: lw, what: "MutatingWebhookConfigurations", errs: c.errs}
		case *corev1.ConfigMap:
			lw = &erroringListerWatcher{ListerWatcher: lw, what: "ConfigMaps in namespace " + c.Namespace, errs: c.errs}
		}
		return next(lw, obj, resync, indexers)
	}
}

type erroringListerWatcher struct {
	toolscache.ListerWatcher
	what string
	errs *listErrors
}

func (e *erroringListerWatcher) List(opts metav1.ListOptions) (runtime.Object, error) {
	list, err := e.ListerWatcher.List(opts)
	e.errs.set(e.what, err)
	return list, err
}

// IsWatchListSemanticsUnSupported keeps what the wrapped ListerWatcher says about streaming
// lists, which the reflector asks.
func (e *erroringListerWatcher) IsWatchListSemanticsUnSupported() bool {
	return watchlist.DoesClientNotSupportWatchListSemantics(e.ListerWatcher)
}

func (e *erroringListerWatcher) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	w, err := e.ListerWatcher.Watch(opts)
	if err != nil {
		e.errs.set(e.what, err)
	}
	return w, err
}
