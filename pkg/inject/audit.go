package inject

import (
	"fmt"
	"maps"
)

// Audit reasons: why a stored workload that is Emissary's edge is not integrated as the
// webhook would integrate it now. Besides these, Audit reports the skip reasons that leave
// an edge without the integration: opt-out, host-network, unknown-image, container-not-found.
const (
	// AuditNotInjected: stored without istio-proxy (created before the webhook was installed,
	// before it handled DaemonSets and bare Pods, or while it could not answer).
	AuditNotInjected = "not-injected"
	// AuditStaleConfig: istio-proxy rendered from another configuration (an Istio upgrade).
	AuditStaleConfig = "stale-config"
	// AuditModified: the template differs from what the webhook renders from the same
	// configuration (edited around the webhook).
	AuditModified = "modified"
	// AuditStaleInjection: still carries istio-proxy, which the next admission removes.
	AuditStaleInjection = "stale-injection"
)

// auditedSkips are the skip reasons Audit reports: the workload is (or says it is) Emissary's
// edge and has no integration.
var auditedSkips = map[string]bool{
	ReasonOptOut: true, ReasonHostNetwork: true, ReasonUnknownImage: true, ReasonContainerNotFound: true,
}

// Finding is what Audit says about one workload.
type Finding struct {
	Reason  string
	Message string
}

// Audit says whether the stored workload w is Emissary's edge without the integration the
// webhook would give it with cfg now, and why. It does not change w. Workloads that are not
// the edge (helpers, other applications, a Pod with an owner) and hand-written integrations
// are no finding; an opted-out edge is one, since its Mappings will fail under STRICT mTLS.
func Audit(w Workload, cfg *Config) (Finding, bool) {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	t := w.Template()
	stored, err := ParseStatus(t)
	probe := copyWorkload(w)
	if w.Kind() == KindPod && stored == nil {
		probe.SetUID("") // a stored Pod is never injected: ask what its re-creation would get
	}
	res := Apply(probe, cfg)
	switch {
	case res.Reason == ReasonPodImmutable: // an injected Pod that the webhook would render otherwise now
		if !Detect(w, cfg).Inject() {
			return Finding{AuditStaleInjection, fmt.Sprintf("still carries %s, which it should not any more: %s", ProxyContainerName, howToReadmit(w))}, true
		}
		if stored.ConfigHash != cfg.modeHash(stored.mode()) {
			return Finding{AuditStaleConfig, fmt.Sprintf("%s was rendered from another configuration: %s", ProxyContainerName, howToReadmit(w))}, true
		}
		return Finding{AuditModified, fmt.Sprintf("its pod template differs from what the webhook renders: %s", howToReadmit(w))}, true
	case res.Changed() && res.Reason != ReasonInjected:
		return Finding{AuditStaleInjection, fmt.Sprintf("still carries %s, which its next apply removes: %s", ProxyContainerName, res.Message)}, true
	case res.Changed() && (stored == nil || err != nil):
		return Finding{AuditNotInjected, fmt.Sprintf("stored without %s (created before the webhook handled it, or while it could not answer): %s", ProxyContainerName, howToReadmit(w))}, true
	case res.Changed() && stored.ConfigHash != cfg.modeHash(stored.mode()):
		return Finding{AuditStaleConfig, fmt.Sprintf("%s was rendered from another configuration: %s", ProxyContainerName, howToReadmit(w))}, true
	case res.Changed():
		return Finding{AuditModified, fmt.Sprintf("its pod template differs from what the webhook renders: %s", howToReadmit(w))}, true
	case res.Reason == ReasonOptOut:
		if det := Detect(withoutOptOut(w), cfg); !det.Inject() {
			return Finding{}, false // opted out, and not the edge anyway
		}
		return Finding{ReasonOptOut, "Emissary's edge opted out of the integration (" + AnnotationInject + `: "false"): its Mappings with tls fail`}, true
	case auditedSkips[res.Reason]:
		return Finding{res.Reason, res.Message}, true
	}
	return Finding{}, false
}

// howToReadmit says how to send w through the webhook again.
func howToReadmit(w Workload) string {
	if w.Kind() == KindPod {
		return "delete and re-create the Pod"
	}
	return fmt.Sprintf("kubectl rollout restart %s %s -n %s", lower(w.Kind()), w.GetName(), w.GetNamespace())
}

func lower(kind string) string {
	return map[string]string{KindDeployment: "deployment", KindDaemonSet: "daemonset"}[kind]
}

// withoutOptOut is a copy of w without the inject annotation, on the object or its template.
func withoutOptOut(w Workload) Workload {
	c := copyWorkload(w)
	ann := maps.Clone(c.GetAnnotations())
	delete(ann, AnnotationInject)
	c.SetAnnotations(ann)
	t := c.Template()
	delete(t.Annotations, AnnotationInject)
	c.SetTemplate(t)
	return c
}
