package main

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/mapping"
)

// apiNamespaces reads a namespace's labels from the API server, one GET per question: what
// `inject --kubeconfig` and `audit` use. (The server reads its informer cache instead,
// mutate.NamespaceCache.)
type apiNamespaces struct{ c client.Reader }

// NamespaceLabels implements mapping.Namespaces.
func (a apiNamespaces) NamespaceLabels(ctx context.Context, name string) (map[string]string, bool, error) {
	var ns corev1.Namespace
	if err := a.c.Get(ctx, client.ObjectKey{Name: name}, &ns); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return ns.Labels, true, nil
}

// layered asks first, then (when set and first does not know the namespace) then.
type layered struct {
	first mapping.Namespaces
	then  mapping.Namespaces
}

// NamespaceLabels implements mapping.Namespaces.
func (l layered) NamespaceLabels(ctx context.Context, name string) (map[string]string, bool, error) {
	lbls, found, err := l.first.NamespaceLabels(ctx, name)
	if found || err != nil || l.then == nil {
		return lbls, found, err
	}
	return l.then.NamespaceLabels(ctx, name)
}
