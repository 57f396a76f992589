package mutate

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/mapping"
)

// NamespaceCache is the mapping.Namespaces of the server: it reads namespace labels through
// a client.Reader backed by a metadata-only informer (PartialObjectMetadata), so an
// admission costs no API call.
type NamespaceCache struct {
	Reader client.Reader
	// Current, when set, says whether the cache holds the API server's labels (nil) or why
	// not; a lookup while it does not fails with ErrCacheStale.
	Current func() error
}

// ErrCacheStale is the error of a namespace lookup while the cache is stale or has not
// synced yet.
var ErrCacheStale = errors.New("the namespace cache is not current")

var _ mapping.Namespaces = NamespaceCache{}

// NamespaceObject is the object the cache is asked for: metadata only, never the full
// Namespace, which keeps the informer small with thousands of namespaces.
func NamespaceObject() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return m
}

// TrimNamespace is the namespace cache's transform: of a namespace only its name and labels
// are ever read, so only they (and the resourceVersion) are stored. The rest can be most of
// a namespace's size: `kubectl apply` copies the whole object into an annotation. With 10,000
// namespaces this keeps the webhook's memory independent of what tools write on them. It
// returns a new object rather than clearing fields in place, as the informer may hand it an
// object it already stores.
func TrimNamespace(in any) (any, error) {
	m, ok := in.(*metav1.PartialObjectMetadata)
	if !ok {
		return in, nil
	}
	return &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: m.Name, ResourceVersion: m.ResourceVersion, Labels: m.Labels,
	}}, nil
}

// NamespaceLabels implements mapping.Namespaces.
func (c NamespaceCache) NamespaceLabels(ctx context.Context, name string) (map[string]string, bool, error) {
	if c.Current != nil {
		if err := c.Current(); err != nil {
			return nil, false, fmt.Errorf("%w: %w", ErrCacheStale, err)
		}
	}
	ns := NamespaceObject()
	if err := c.Reader.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return ns.Labels, true, nil
}
