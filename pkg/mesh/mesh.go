// Package mesh is the cluster's Istio as data: its revisions, its revision tags, each
// revision's injector values and mesh config, and Istio's own rules over them (which revision
// serves a workload, which proxy image and addresses that revision's injector renders, which
// proxy releases its control plane supports).
//
// It is pure: it reads objects the caller hands it (the webhook's informer caches, or a list
// from `webhook audit`) and never talks to an API server. Everything it decides is read from
// Istio's objects, never guessed from names: a revision is a MutatingWebhookConfiguration
// labelled istio.io/rev (its name carries a namespace suffix outside istio-system), a tag one
// labelled istio.io/tag too, and which of them serves a workload is decided by evaluating the
// webhooks' own namespace and object selectors, exactly as the API server does when it calls
// Istio's injector.
package mesh

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
)

// Istio's names (pinned release 1.29.1: manifests/charts/istio-control/istio-discovery).
const (
	// DefaultNamespace is where Istio's control plane lives unless configured otherwise.
	DefaultNamespace = "istio-system"
	// DefaultRevision is the name of the unrevisioned control plane (label istio.io/rev:
	// "default") and of the tag that makes a revision the default one.
	DefaultRevision = "default"

	LabelRev           = "istio.io/rev"
	LabelTag           = "istio.io/tag"
	LabelInjection     = "istio-injection"
	LabelSidecarInject = "sidecar.istio.io/inject"

	// Pod annotations Istio's injector reads for the proxy image.
	AnnotationProxyImage     = "sidecar.istio.io/proxyImage"
	AnnotationProxyImageType = "sidecar.istio.io/proxyImageType"

	injectorConfigMap = "istio-sidecar-injector" // + "-<rev>": key "values" (JSON)
	meshConfigMap     = "istio"                  // + "-<rev>": key "mesh" (YAML)
)

// Objects is what a Mesh is built from: the MutatingWebhookConfigurations labelled
// istio.io/rev (any others are ignored) and the ConfigMaps of Istio's namespace.
type Objects struct {
	// Namespace is Istio's namespace ("" means DefaultNamespace).
	Namespace  string
	Webhooks   []admissionregistrationv1.MutatingWebhookConfiguration
	ConfigMaps []corev1.ConfigMap
}

// Mesh is the cluster's Istio. Build it with New; it is read-only afterwards and safe to share.
type Mesh struct {
	// Namespace is Istio's namespace.
	Namespace string
	// Revisions by name ("default" for the unrevisioned control plane).
	Revisions map[string]*Revision
	// Tags maps each revision tag to the revision it points to.
	Tags map[string]string
	// injectors are the injector webhooks in the order the API server calls them.
	injectors []injector
}

// Revision is one control plane: what its injector renders from.
type Revision struct {
	Name string
	// Webhook is the name of its injector's MutatingWebhookConfiguration; "" when only its
	// ConfigMaps were found.
	Webhook string
	Values  Values
	Mesh    MeshConfig
	// Problems name what could not be read for this revision (a missing or unparsable
	// ConfigMap); the values concerned are Istio's defaults.
	Problems []string
}

// injector is one webhook of an injector configuration.
type injector struct {
	config   string // the MutatingWebhookConfiguration's name
	revision string // label istio.io/rev
	tag      string // label istio.io/tag, "" for a revision's own webhook
	webhook  admissionregistrationv1.MutatingWebhook
}

// New builds the Mesh from o. It never fails: what cannot be read is recorded in the
// revision's Problems, and what is not there is simply absent.
func New(o Objects) *Mesh {
	m := &Mesh{Namespace: o.Namespace, Revisions: map[string]*Revision{}, Tags: map[string]string{}}
	if m.Namespace == "" {
		m.Namespace = DefaultNamespace
	}
	cms := map[string]*corev1.ConfigMap{}
	for i := range o.ConfigMaps {
		if cm := &o.ConfigMaps[i]; cm.Namespace == "" || cm.Namespace == m.Namespace {
			cms[cm.Name] = cm
		}
	}
	hooks := slices.Clone(o.Webhooks)
	// The API server calls mutating webhook configurations in the order of their names.
	sort.Slice(hooks, func(i, j int) bool { return hooks[i].Name < hooks[j].Name })
	for _, cfg := range hooks {
		rev, ok := cfg.Labels[LabelRev]
		if !ok || rev == "" {
			continue
		}
		tag := cfg.Labels[LabelTag]
		var served bool
		for _, wh := range cfg.Webhooks {
			if !m.isInjector(wh) {
				continue
			}
			served = true
			m.injectors = append(m.injectors, injector{config: cfg.Name, revision: rev, tag: tag, webhook: wh})
		}
		if !served {
			continue
		}
		if tag != "" {
			m.Tags[tag] = rev
			continue
		}
		if _, ok := m.Revisions[rev]; !ok {
			m.Revisions[rev] = readRevision(rev, cfg.Name, cms)
		}
	}
	// A tag may point at a revision whose own webhook is gone (or not readable): its
	// ConfigMaps still say what it renders.
	for _, rev := range m.Tags {
		if _, ok := m.Revisions[rev]; !ok {
			m.Revisions[rev] = readRevision(rev, "", cms)
		}
	}
	return m
}

// isInjector reports whether wh is an Istio sidecar injector of this mesh: it is called for
// pod CREATEs and, when it names a Service, that Service is in Istio's namespace (another
// Istio in another namespace is another mesh).
func (m *Mesh) isInjector(wh admissionregistrationv1.MutatingWebhook) bool {
	if !strings.HasSuffix(wh.Name, "sidecar-injector.istio.io") {
		return false
	}
	if s := wh.ClientConfig.Service; s != nil && s.Namespace != m.Namespace {
		return false
	}
	for _, r := range wh.Rules {
		if slices.Contains(r.Resources, "pods") || slices.Contains(r.Resources, "*") {
			return true
		}
	}
	return false
}

// configMapName is the name of a revision's ConfigMap of base name.
func configMapName(base, rev string) string {
	if rev == DefaultRevision {
		return base
	}
	return base + "-" + rev
}

func readRevision(name, webhook string, cms map[string]*corev1.ConfigMap) *Revision {
	r := &Revision{Name: name, Webhook: webhook}
	if cm, ok := cms[configMapName(injectorConfigMap, name)]; !ok {
		r.Problems = append(r.Problems, fmt.Sprintf("ConfigMap %s not found", configMapName(injectorConfigMap, name)))
	} else if v, err := ParseValues(cm.Data["values"]); err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("ConfigMap %s: %v", cm.Name, err))
	} else {
		r.Values = v
	}
	if cm, ok := cms[configMapName(meshConfigMap, name)]; !ok {
		r.Problems = append(r.Problems, fmt.Sprintf("ConfigMap %s not found", configMapName(meshConfigMap, name)))
	} else if mc, err := ParseMeshConfig(cm.Data["mesh"]); err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("ConfigMap %s: %v", cm.Name, err))
	} else {
		r.Mesh = mc
	}
	return r
}

// Empty reports whether no Istio was found: no injector webhook and no revision.
func (m *Mesh) Empty() bool { return len(m.Revisions) == 0 && len(m.Tags) == 0 }

// RevisionNames lists the revisions, sorted.
func (m *Mesh) RevisionNames() []string { return sortedKeys(m.Revisions) }

// TagNames lists the tags, sorted.
func (m *Mesh) TagNames() []string { return sortedKeys(m.Tags) }

func sortedKeys[V any](mp map[string]V) []string {
	keys := make([]string, 0, len(mp))
	for k := range mp {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Lookup finds a revision by its name or by a tag's. tag is the tag name when name is one.
// A tag wins over a revision of the same name, as Istio's tag webhooks are what select.
func (m *Mesh) Lookup(name string) (rev *Revision, tag string, ok bool) {
	if r, isTag := m.Tags[name]; isTag {
		rev, ok = m.Revisions[r]
		return rev, name, ok
	}
	rev, ok = m.Revisions[name]
	return rev, "", ok
}

// Describe is a one-line summary for messages: the revisions and tags found.
func (m *Mesh) Describe() string {
	if m.Empty() {
		return fmt.Sprintf("no Istio found (no MutatingWebhookConfiguration labelled %s of a sidecar injector in namespace %s)", LabelRev, m.Namespace)
	}
	var tags []string
	for _, t := range m.TagNames() {
		tags = append(tags, t+"→"+m.Tags[t])
	}
	s := "Istio revisions " + strings.Join(m.RevisionNames(), ", ")
	if len(tags) > 0 {
		s += "; tags " + strings.Join(tags, ", ")
	}
	return s
}
