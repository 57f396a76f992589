package mapping

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/sets"
)

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

// MeshedLabels returns labels that make a namespace meshed under c's selectors, for the
// CLI's --meshed-namespaces: those of the first selector whose requirements can all hold at
// once (a value from an = or in list, any allowed value for "exists" or a bound, no label for
// != and notin). negativeOnly says that selector has no requirement a label must meet, so it
// takes the empty set: every namespace without the labels it excludes is meshed. It is an
// error when no selector can be satisfied (there are none: Mapping defaulting is off, or
// each contradicts itself, like "a=1,a=2").
func (c *Config) MeshedLabels() (set map[string]string, negativeOnly bool, err error) {
	if len(c.selectors) == 0 {
		return nil, false, fmt.Errorf("mapping.meshedNamespaceSelectors is empty: no namespace is meshed (Mapping defaulting is off)")
	}
	var whyNot []string
	for i, sel := range c.selectors {
		reqs, _ := sel.Requirements()
		set, err := satisfy(reqs)
		if err == nil && sel.Matches(labels.Set(set)) {
			return set, len(set) == 0, nil
		}
		if err == nil {
			err = fmt.Errorf("no label set found")
		}
		whyNot = append(whyNot, fmt.Sprintf("%q: %v", c.MeshedNamespaceSelectors[i], err))
	}
	return nil, false, fmt.Errorf("no namespace labels satisfy any of mapping.meshedNamespaceSelectors: %s", strings.Join(whyNot, "; "))
}

// satisfy picks a label set that meets every requirement (all on the same selector).
func satisfy(reqs labels.Requirements) (map[string]string, error) {
	type constraint struct {
		present, absent bool
		allowed         sets.Set[string] // nil: any value
		excluded        sets.Set[string]
		gt, lt          *int64
	}
	byKey := map[string]*constraint{}
	var keys []string
	for _, r := range reqs {
		c := byKey[r.Key()]
		if c == nil {
			c = &constraint{excluded: sets.New[string]()}
			byKey[r.Key()] = c
			keys = append(keys, r.Key())
		}
		vals := r.ValuesUnsorted()
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
			c.present = true
			if c.allowed == nil {
				c.allowed = sets.New(vals...)
			} else {
				c.allowed = c.allowed.Intersection(sets.New(vals...))
			}
		case selection.NotEquals, selection.NotIn:
			c.excluded.Insert(vals...)
		case selection.Exists:
			c.present = true
		case selection.DoesNotExist:
			c.absent = true
		case selection.GreaterThan, selection.LessThan:
			c.present = true
			n, err := strconv.ParseInt(vals[0], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %q is not an integer", r.Key(), vals[0])
			}
			if r.Operator() == selection.GreaterThan {
				c.gt = &n
			} else {
				c.lt = &n
			}
		}
	}
	set := map[string]string{}
	for _, key := range keys {
		c := byKey[key]
		if !c.present {
			continue // absent meets !key, != and notin
		}
		if c.absent {
			return nil, fmt.Errorf("%s must both exist and not exist", key)
		}
		var candidates []string
		switch {
		case c.allowed != nil:
			candidates = sets.List(c.allowed)
		case c.gt != nil || c.lt != nil:
			n := int64(1)
			if c.gt != nil {
				n = *c.gt + 1
			} else if *c.lt <= n {
				n = *c.lt - 1
			}
			candidates = []string{strconv.FormatInt(n, 10)}
		default:
			candidates = []string{"enabled", "true", "default"}
		}
		value, ok := "", false
		for _, v := range candidates {
			if !c.excluded.Has(v) {
				value, ok = v, true
				break
			}
		}
		if !ok {
			return nil, fmt.Errorf("no value of %s meets all of its terms", key)
		}
		set[key] = value
	}
	return set, nil
}
