package mutate

import (
	"context"
	"fmt"
	"strings"
	"sync"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mesh"
)

// MeshCache is the adapter between informer caches and pkg/mesh: it hands pkg/inject the
// cluster's Istio (MeshView) for each workload admission at no API call. Two read-only
// client-go informers feed it: Istio's MutatingWebhookConfigurations (only those labelled
// istio.io/rev) and the ConfigMaps of Istio's namespace (only their "values" and "mesh" keys
// are kept). Nothing is ever written.
//
// They run beside the manager's cache, not in it: an informer that cannot list (no RBAC)
// never syncs, and in the manager's cache it would hold up the manager's start and stop.
// While they cannot list or have not synced, the view is unavailable and says why; pkg/inject
// then keeps every existing injection (UpdatePatch) and renders a new one from the
// configuration's defaults with a warning.
type MeshCache struct {
	// Reader is the manager's cache (namespace labels); APIReader reads a namespace the cache
	// has not seen yet (created in the same apply as the workload).
	Reader    client.Reader
	APIReader client.Reader
	Namespace string // Istio's namespace

	mu   sync.Mutex
	key  string // fingerprint (names and resourceVersions) of what memo was built from
	memo *mesh.Mesh

	errs                 *listErrors
	webhooks, configMaps toolscache.SharedIndexInformer
	factories            []informers.SharedInformerFactory
}

const whatWebhooks = "MutatingWebhookConfigurations"

func (c *MeshCache) whatConfigMaps() string { return "ConfigMaps in namespace " + c.Namespace }

// newMeshCache builds the informers for Istio in namespace; Start runs them.
func newMeshCache(restCfg *rest.Config, namespace string) (*MeshCache, error) {
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("mutate: mesh cache client: %w", err)
	}
	c := &MeshCache{Namespace: namespace, errs: &listErrors{}}
	hooks := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = mesh.LabelRev // Istio's injector and tag webhooks only
	}))
	cms := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(namespace))
	c.webhooks = hooks.Admissionregistration().V1().MutatingWebhookConfigurations().Informer()
	c.configMaps = cms.Core().V1().ConfigMaps().Informer()
	c.factories = []informers.SharedInformerFactory{hooks, cms}
	for _, i := range []struct {
		what      string
		informer  toolscache.SharedIndexInformer
		transform toolscache.TransformFunc
	}{{whatWebhooks, c.webhooks, trimWebhooks}, {c.whatConfigMaps(), c.configMaps, trimConfigMap}} {
		what := i.what
		if err := i.informer.SetTransform(i.transform); err != nil {
			return nil, err
		}
		if err := i.informer.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *toolscache.Reflector, err error) {
			c.errs.set(what, err)
			toolscache.DefaultWatchErrorHandler(ctx, r, err)
		}); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Start runs the informers until ctx ends (a manager.Runnable).
func (c *MeshCache) Start(ctx context.Context) error {
	for _, f := range c.factories {
		f.Start(ctx.Done())
	}
	<-ctx.Done()
	for _, f := range c.factories {
		f.Shutdown()
	}
	return nil
}

// NeedLeaderElection is false: every replica answers admissions, so every replica reads.
func (c *MeshCache) NeedLeaderElection() bool { return false }

// trimWebhooks drops what pkg/mesh never reads of a webhook configuration.
func trimWebhooks(in any) (any, error) {
	if o, ok := in.(*admissionregistrationv1.MutatingWebhookConfiguration); ok {
		o.ManagedFields, o.Annotations = nil, nil
	}
	return in, nil
}

// trimConfigMap keeps of a ConfigMap only what pkg/mesh reads: the injector's "values" and
// the mesh config's "mesh" (the injector ConfigMap's templates are most of its size). It
// returns a new object rather than clearing fields in place.
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

// unavailable says why the view cannot be read now ("" when it can).
func (c *MeshCache) unavailable() string {
	for _, i := range []struct {
		what     string
		informer toolscache.SharedIndexInformer
	}{{whatWebhooks, c.webhooks}, {c.whatConfigMaps(), c.configMaps}} {
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
		if c.webhooks.HasSynced() {
			if hooks, _ := c.objects(); mesh.New(mesh.Objects{Namespace: c.Namespace, Webhooks: hooks}).Empty() {
				v.Mesh = mesh.New(mesh.Objects{Namespace: c.Namespace})
				return v
			}
		}
		v.Unavailable = why
		return v
	}
	v.Mesh = c.mesh()
	return v
}

// mesh builds the Mesh from the caches, again only when something in them changed.
func (c *MeshCache) mesh() *mesh.Mesh {
	hooks, cms := c.objects()
	var key strings.Builder
	for _, h := range hooks {
		key.WriteString(h.Name + "/" + h.ResourceVersion + ";")
	}
	for _, cm := range cms {
		key.WriteString(cm.Name + "/" + cm.ResourceVersion + ";")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.memo != nil && c.key == key.String() {
		return c.memo
	}
	c.memo = mesh.New(mesh.Objects{Namespace: c.Namespace, Webhooks: hooks, ConfigMaps: cms})
	c.key = key.String()
	return c.memo
}

// objects are the cached objects, copied by value (the caches' own are only read: pkg/mesh
// never modifies what it is given).
func (c *MeshCache) objects() ([]admissionregistrationv1.MutatingWebhookConfiguration, []corev1.ConfigMap) {
	var hooks []admissionregistrationv1.MutatingWebhookConfiguration
	for _, o := range c.webhooks.GetStore().List() {
		if h, ok := o.(*admissionregistrationv1.MutatingWebhookConfiguration); ok {
			hooks = append(hooks, *h)
		}
	}
	var cms []corev1.ConfigMap
	for _, o := range c.configMaps.GetStore().List() {
		if cm, ok := o.(*corev1.ConfigMap); ok {
			cms = append(cms, *cm)
		}
	}
	return hooks, cms
}

// listErrors records the last list or watch error of each mesh informer, so that readiness
// and admissions can say "forbidden" instead of waiting for ever.
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
