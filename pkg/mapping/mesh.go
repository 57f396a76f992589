package mapping

import "context"

// MeshLookup answers whether a namespace is meshed, for Decide: known is false when the
// namespace does not exist, err is set when that could not be found out.
type MeshLookup func(namespace string) (meshed, known bool, err error)

// Namespaces says what labels a namespace has; found is false when it does not exist. The
// server reads them from its informer cache (pkg/mutate), the CLI from the YAML stream, its
// flags or, with --kubeconfig, one GET per namespace asked.
type Namespaces interface {
	NamespaceLabels(ctx context.Context, name string) (labels map[string]string, found bool, err error)
}

// StaticNamespaces is a fixed set of namespaces and their labels.
type StaticNamespaces map[string]map[string]string

// NamespaceLabels implements Namespaces.
func (s StaticNamespaces) NamespaceLabels(_ context.Context, name string) (map[string]string, bool, error) {
	l, ok := s[name]
	return l, ok, nil
}

// Lookup is the MeshLookup that reads labels from namespaces and matches them against c's
// selectors.
func (c *Config) Lookup(ctx context.Context, namespaces Namespaces) MeshLookup {
	return func(namespace string) (meshed, known bool, err error) {
		lbls, found, err := namespaces.NamespaceLabels(ctx, namespace)
		if err != nil || !found {
			return false, false, err
		}
		return c.Meshed(lbls), true, nil
	}
}
