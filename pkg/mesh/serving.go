package mesh

import (
	"fmt"
	"maps"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Serving is the revision that serves a workload, and how it was chosen.
type Serving struct {
	Revision *Revision
	// Tag is the revision tag that selected it ("" when the revision's own webhook did).
	Tag string
	// By says how, for messages: the webhook that selects the workload, or why the default
	// revision was taken.
	By string
	// Default is true when no injector webhook selects the workload and the default revision
	// was taken instead (the workload's namespace is not labelled for injection).
	Default bool
}

// Name is the revision's name, with the tag it was reached by: "stable (tag prod-stable)".
func (s Serving) Name() string {
	if s.Tag != "" {
		return fmt.Sprintf("%s (tag %s)", s.Revision.Name, s.Tag)
	}
	return s.Revision.Name
}

// Proxy is what the serving revision renders (Revision.Proxy), with Tag set to the tag that
// selected it.
func (s Serving) Proxy(istioNamespace string, podAnnotations map[string]string) Proxy {
	p := s.Revision.Proxy(istioNamespace, podAnnotations)
	p.Tag = s.Tag
	return p
}

// Select is the revision Istio's injector webhooks would inject a pod of namespace
// (namespaceLabels) with podLabels from: the first of its injector webhooks, in the order the
// API server calls them, whose namespaceSelector and objectSelector match. Those selectors
// are Istio's rules (istio-injection=enabled selects the default revision or tag,
// istio.io/rev=<revision or tag> on the namespace or the pod selects that one, the pod's
// sidecar.istio.io/inject opts in or out), so they are evaluated rather than re-implemented.
//
// The pod's sidecar.istio.io/inject: "false" is disregarded: it keeps Istio's own proxy out
// of a pod whose proxy someone else renders, which is the question here.
//
// When no webhook selects the pod, the default revision (the tag "default", else the
// revision "default") serves it, with Default set; ok is false when there is none either.
func (m *Mesh) Select(namespaceLabels, podLabels map[string]string) (s Serving, ok bool) {
	pod := podLabels
	if pod[LabelSidecarInject] == "false" {
		pod = maps.Clone(podLabels)
		delete(pod, LabelSidecarInject)
	}
	for _, inj := range m.injectors {
		if !matches(inj.webhook.NamespaceSelector, namespaceLabels) || !matches(inj.webhook.ObjectSelector, pod) {
			continue
		}
		rev, found := m.Revisions[inj.revision]
		if !found { // cannot happen: New records every injector's revision
			continue
		}
		return Serving{Revision: rev, Tag: inj.tag, By: fmt.Sprintf("webhook %s of %s", inj.webhook.Name, inj.config)}, true
	}
	if rev, tag, found := m.Lookup(DefaultRevision); found {
		by := "no injector webhook selects the workload's namespace or pod; the default revision"
		if tag != "" {
			by += " (tag default)"
		}
		return Serving{Revision: rev, Tag: tag, By: by, Default: true}, true
	}
	return Serving{}, false
}

// matches is the API server's reading of a webhook selector: nil or empty selects all.
func matches(sel *metav1.LabelSelector, l map[string]string) bool {
	if sel == nil {
		return true
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil { // the API server rejects such a webhook configuration
		return false
	}
	return s.Matches(labels.Set(l))
}

// UnknownRevision names a revision or tag that the workload asks for by istio.io/rev and that
// does not exist in m ("" when there is none), and where the label is ("namespace" or "pod"):
// Istio injects no proxy into such a pod, and a sidecar rendered for it has no istiod. As in
// Istio's webhooks, a namespace's istio-injection label overrides its istio.io/rev, and the
// namespace's istio.io/rev the pod's.
func (m *Mesh) UnknownRevision(namespaceLabels, podLabels map[string]string) (name, where string) {
	if _, ok := namespaceLabels[LabelInjection]; ok {
		return "", ""
	}
	rev, where := namespaceLabels[LabelRev], "namespace"
	if _, ok := namespaceLabels[LabelRev]; !ok {
		rev, where = podLabels[LabelRev], "pod"
	}
	if rev == "" {
		return "", ""
	}
	if _, _, found := m.Lookup(rev); found {
		return "", ""
	}
	return rev, where
}
