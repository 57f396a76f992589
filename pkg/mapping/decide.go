package mapping

// Mapping defaulting: the pure decision whether a getambassador.io Mapping gets
// `spec.tls: <TLSContext>` (and its port pinned to 80). It does when spec.tls is absent,
// spec.service has no scheme and is not an IP address, the namespace it means (Emissary's
// rule, ParseService) is meshed, the resolver is one of Emissary's Kubernetes resolvers,
// and the Mapping does not opt out.
//
// The finer points:
//   - `spec.tls: null` counts as absent (a merge patch null deletes the field, so the stored
//     object never has it). Any other value is the user's: true, false, a name, and also ""
//     (Emissary reads "" like false, "defer to the service"; a v2 user who wrote it meant it).
//     A tls of another type (a number, a map) is not touched: reason bad-spec.
//   - `resolver` is the NAME of a resolver resource. Only Emissary's built-in Kubernetes
//     resolver names count (kubernetes-service, kubernetes-endpoint and its alias endpoint, see
//     irserviceresolver.py IRServiceResolverFactory); any other name, including a custom
//     KubernetesEndpointResolver, is skipped with reason "resolver". Known limitation: a
//     Mapping without `resolver` uses the Ambassador Module's `resolver` default, which this
//     webhook cannot see; a Module that makes Consul the default is not detected.
//   - A bare service name means the Mapping's namespace (Emissary 2.x/3.x). Known limitation:
//     an Ambassador Module with use_ambassador_namespace_for_service_resolution is not seen.
//   - A host that is not a Kubernetes Service name (localhost, api.example.com, a label that
//     is not a DNS-1123 label) is skipped with the extra reason "external".
//   - A Mapping with host_redirect set is skipped with the extra reason "redirect": its service
//     is the host a 301 points at, and pinning ":80" would change the redirect.
//   - Annotation emissary-istio.io/tls: "skip" (case-insensitive, spaces trimmed) opts out;
//     any other value of that annotation is ignored with a warning.
//   - Port 0 counts as absent (Emissary's "if not port"), so "quote:0" is pinned to "quote:80".

import (
	"errors"
	"fmt"
	"strings"
)

// Annotations read and written on a Mapping.
const (
	// AnnotationTLS on a Mapping, set to TLSSkip, opts the Mapping out.
	AnnotationTLS = "emissary-istio.io/tls"
	TLSSkip       = "skip"
	// AnnotationDefaulted records the spec.tls value this webhook wrote. A tls equal to it
	// is the webhook's, not the user's: it is decided again on every admission (like the
	// Deployment's status annotation), so a client-side re-apply that resets the pinned
	// service to its port-less form gets the port back, and a Mapping whose upstream left the
	// mesh loses the tls the webhook gave it.
	AnnotationDefaulted = "emissary-istio.io/defaulted-tls"
)

// Reasons of a Decision: stable, low-cardinality metric label values.
const (
	ReasonDefaulted        = "defaulted"
	ReasonTLSSet           = "tls-set"
	ReasonScheme           = "scheme"
	ReasonIP               = "ip"
	ReasonExternal         = "external"
	ReasonInvalidService   = "invalid-service"
	ReasonNoService        = "no-service"
	ReasonResolver         = "resolver"
	ReasonOptOut           = "opt-out"
	ReasonNotMeshed        = "not-meshed"
	ReasonNamespaceUnknown = "namespace-unknown"
	ReasonBadSpec          = "bad-spec"
	ReasonRedirect         = "redirect"
	ReasonUpToDate         = "up-to-date"
)

// Reasons lists every Reason Decide returns, e.g. to pre-create metric series.
var Reasons = []string{
	ReasonDefaulted, ReasonTLSSet, ReasonScheme, ReasonIP,
	ReasonExternal, ReasonInvalidService, ReasonNoService,
	ReasonResolver, ReasonOptOut, ReasonNotMeshed,
	ReasonNamespaceUnknown, ReasonBadSpec, ReasonRedirect, ReasonUpToDate,
}

// k8sResolvers are Emissary's built-in Kubernetes resolver names.
var k8sResolvers = map[string]bool{
	"kubernetes-service":  true,
	"kubernetes-endpoint": true,
	"endpoint":            true,
}

// Decision says what to do with one Mapping and why.
type Decision struct {
	Default   bool     // write spec.tls = TLSContext
	Service   string   // new spec.service when the port is pinned (":80" appended); "" = leave service as is
	Reason    string   // stable, low-cardinality reason used as a metric label (Reasons)
	Message   string   // one human sentence: what was done and why
	Notice    string   // user-visible, on a mutation: what was changed (said when it changes what is stored)
	Warnings  []string // user-visible: notable skips, whether or not anything changed
	Namespace string   // the namespace the service means, when known
	TLS       string   // the value for spec.tls when Default: the configured TLSContext
	// Revert: spec.tls is the webhook's (AnnotationDefaulted) but the Mapping no longer
	// qualifies; remove spec.tls and the annotation. Never set together with Default.
	Revert bool
	// Unprotected: the upstream's namespace is meshed, yet the Mapping (left unchanged) sends
	// plain text or TLS without Istio's certificate there: tls true, false or "", an
	// http:// or https:// service, or an opt-out without tls. `webhook audit` lists it.
	Unprotected bool
}

// Restores reports whether the Mapping d stores has the same spec.tls, spec.service and
// defaulted-tls annotation as stored, the Mapping in the cluster before this UPDATE: the
// webhook's part changes nothing (a client-side re-apply dropped the pinned port, and the
// patch puts it back), so there is nothing to tell the user.
func (d Decision) Restores(stored map[string]interface{}) bool {
	if !d.Changed() || stored == nil {
		return false
	}
	spec, _ := stored["spec"].(map[string]interface{})
	meta, _ := stored["metadata"].(map[string]interface{})
	annotations, _ := meta["annotations"].(map[string]interface{})
	tls, hasTLS := spec["tls"]
	owned, hasOwned := annotations[AnnotationDefaulted]
	if d.Revert {
		return !hasTLS && !hasOwned
	}
	return tls == d.TLS && owned == d.TLS && (d.Service == "" || spec["service"] == d.Service)
}

// Changed reports whether the decision changes the Mapping.
func (d Decision) Changed() bool { return d.Default || d.Revert }

// warningPrefix starts every warning, so kubectl users see who speaks.
const warningPrefix = "emissary-istio: "

// maxWarningLen bounds a warning: the API server may truncate longer ones.
const maxWarningLen = 256

// clip cuts s to at most n bytes (plus "..."), for user-controlled text in messages.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && (s[cut]&0xC0) == 0x80 { // do not split a UTF-8 sequence
		cut--
	}
	return s[:cut] + "..."
}

// quote quotes user text for messages and warnings (escapes control characters).
func quote(s string) string { return fmt.Sprintf("%q", clip(s, 64)) }

// Decide inspects an unstructured Mapping object (the whole object as
// map[string]interface{}: apiVersion, kind, metadata, spec) — v1, v2 or v3alpha1 — and
// decides. It never mutates obj and never panics on any input (spec not a map, service not a
// string, tls of any type...). cfg must be defaulted (DefaultConfig, or the mapping section
// of a loaded configuration); nil means DefaultConfig(). lookup says which namespaces are
// meshed; nil means none is known.
//
// A failed lookup is returned as the error, with the decision made as if that namespace did
// not exist: such a decision never sets tls and never takes it away because of the
// namespace. The server answers with it (and logs the error); the CLI stops.
func Decide(obj map[string]interface{}, cfg *Config, lookup MeshLookup) (Decision, error) {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	var lookupErr error
	meshed := func(namespace string) (meshed, known bool) {
		if lookup == nil {
			return false, false
		}
		m, k, err := lookup(namespace)
		if err != nil {
			if lookupErr == nil {
				lookupErr = fmt.Errorf("namespace %s: %w", namespace, err)
			}
			return false, false
		}
		return m, k
	}
	d := decide(obj, cfg.TLSContext, meshed)
	return d, lookupErr
}

// decide is Decide with the lookup's errors taken care of.
func decide(obj map[string]interface{}, tlsContext string, meshed func(namespace string) (meshed, known bool)) Decision {
	d := Decision{TLS: tlsContext}
	// ownTLS: spec.tls holds the value this webhook wrote (AnnotationDefaulted), so it
	// is decided again rather than respected as the user's.
	var ownTLS string
	skip := func(reason, format string, args ...interface{}) Decision {
		d.Reason = reason
		if ownTLS != "" {
			d.Revert = true
			d.Message = fmt.Sprintf("removed spec.tls: %s that this webhook had set: ", clip(ownTLS, 200)) + fmt.Sprintf(format, args...)
			d.Notice = clip(warningPrefix+d.Message, maxWarningLen-3)
			return d
		}
		d.Message = "left unchanged: " + fmt.Sprintf(format, args...)
		return d
	}
	warn := func(format string, args ...interface{}) {
		d.Warnings = append(d.Warnings, clip(warningPrefix+fmt.Sprintf(format, args...), maxWarningLen-3))
	}

	if obj == nil {
		return skip(ReasonBadSpec, "the object is empty")
	}
	if k := obj["kind"]; k != nil {
		if ks, ok := k.(string); !ok || ks != "Mapping" {
			return skip(ReasonBadSpec, "kind is %s, not Mapping", quote(fmt.Sprint(k)))
		}
	}

	var mappingNS string
	var annotations map[string]interface{}
	if mv := obj["metadata"]; mv != nil {
		meta, ok := mv.(map[string]interface{})
		if !ok {
			return skip(ReasonBadSpec, "metadata is not an object")
		}
		if nv := meta["namespace"]; nv != nil {
			if mappingNS, ok = nv.(string); !ok {
				return skip(ReasonBadSpec, "metadata.namespace is not a string")
			}
		}
		if av := meta["annotations"]; av != nil {
			if annotations, ok = av.(map[string]interface{}); !ok {
				return skip(ReasonBadSpec, "metadata.annotations is not an object")
			}
		}
	}

	sv, ok := obj["spec"]
	if !ok || sv == nil {
		return skip(ReasonBadSpec, "the Mapping has no spec")
	}
	spec, ok := sv.(map[string]interface{})
	if !ok {
		return skip(ReasonBadSpec, "spec is not an object")
	}

	if t, isStr := spec["tls"].(string); isStr && t != "" && annotations[AnnotationDefaulted] == t {
		ownTLS = t
	}

	// The service, parsed early: tls-set uses it for its warnings. svcOK: a non-empty string;
	// svcErr: Emissary (or the namespace rule) rejects it.
	var svc string
	var svcOK bool
	var p ParsedService
	var svcErr error
	if v, isStr := spec["service"].(string); isStr && v != "" {
		svc, svcOK = v, true
		p, svcErr = ParseService(v, mappingNS)
	}
	if svcOK && svcErr == nil && p.InCluster {
		d.Namespace = p.Namespace
	}
	// k8sResolver: the Mapping uses one of Emissary's built-in Kubernetes resolvers.
	rname, rIsString := spec["resolver"].(string)
	k8sResolver := spec["resolver"] == nil || (rIsString && (rname == "" || k8sResolvers[rname]))
	// meshedNS says whether the service's namespace is known to be meshed (for warnings).
	meshedNS := func() bool {
		if d.Namespace == "" {
			return false
		}
		m, known := meshed(d.Namespace)
		return known && m
	}
	plainK8s := svcOK && svcErr == nil && p.Scheme == "" && k8sResolver

	if av, ok := annotations[AnnotationTLS]; ok {
		if s, isStr := av.(string); isStr && strings.EqualFold(strings.TrimSpace(s), TLSSkip) {
			_, hasTLS := spec["tls"]
			d.Unprotected = !hasTLS && ownTLS == "" && k8sResolver && meshedNS()
			return skip(ReasonOptOut, "the Mapping has annotation %s: %s", AnnotationTLS, TLSSkip)
		}
		warn("annotation %s has value %s; only %q opts out, so it is ignored", AnnotationTLS, quote(fmt.Sprint(av)), TLSSkip)
	}

	if tv, ok := spec["tls"]; ok && tv != nil && ownTLS == "" {
		switch t := tv.(type) {
		case bool:
			if plainK8s && meshedNS() {
				d.Unprotected = true
				if t {
					warn("service namespace %s is meshed but tls is true: Emissary originates TLS without Istio's client certificate, which Istio mTLS rejects; use tls: %s", d.Namespace, quote(tlsContext))
				} else {
					warn("service namespace %s is meshed but tls is false: Emissary will send plain text, which STRICT mTLS rejects", d.Namespace)
				}
			}
			return skip(ReasonTLSSet, "spec.tls is already set to %t", t)
		case string:
			if t == "" && plainK8s && meshedNS() {
				d.Unprotected = true
				warn("service namespace %s is meshed but tls is empty: Emissary will send plain text, which STRICT mTLS rejects", d.Namespace)
			}
			return skip(ReasonTLSSet, "spec.tls is already set to %s", quote(t))
		default:
			return skip(ReasonBadSpec, "spec.tls is a %s, not a string or a bool", jsonType(tv))
		}
	}

	// With host_redirect, service is the host a 301 points at, not an upstream: pinning a port
	// would change the redirect (Emissary docs, "Redirects").
	if hr := spec["host_redirect"]; hr != nil && hr != false {
		return skip(ReasonRedirect, "host_redirect is set, so service is a redirect target, not an upstream")
	}

	switch v := spec["service"].(type) {
	case nil:
		return skip(ReasonNoService, "spec.service is not set")
	case string:
		if v == "" {
			return skip(ReasonNoService, "spec.service is empty")
		}
	default:
		return skip(ReasonBadSpec, "spec.service is a %s, not a string", jsonType(v))
	}

	if rv := spec["resolver"]; rv != nil {
		r, ok := rv.(string)
		if !ok {
			return skip(ReasonBadSpec, "spec.resolver is a %s, not a string", jsonType(rv))
		}
		if r != "" && !k8sResolvers[r] {
			d.Namespace = "" // what the service means is up to that resolver
			return skip(ReasonResolver, "resolver %s is not one of Emissary's built-in Kubernetes resolvers (kubernetes-service, kubernetes-endpoint, endpoint)", quote(r))
		}
	}

	if svcErr != nil {
		if errors.Is(svcErr, ErrNoNamespace) {
			warn("service %s is a bare name but the Mapping's namespace is unknown; tls not set", quote(svc))
			return skip(ReasonNamespaceUnknown, "service %s is a bare name and the Mapping has no namespace", quote(svc))
		}
		warn("Emissary cannot parse service %s: %s", quote(svc), clip(svcErr.Error(), 120))
		return skip(ReasonInvalidService, "Emissary cannot parse service %s: %s", quote(svc), clip(svcErr.Error(), 200))
	}

	if p.Scheme != "" {
		if meshedNS() {
			d.Unprotected = true
			switch p.Scheme {
			case "http":
				warn("service namespace %s is meshed but service %s uses http://: Emissary will send plain text, which STRICT mTLS rejects; drop the scheme to get tls: %s", d.Namespace, quote(svc), quote(tlsContext))
			case "https":
				warn("service namespace %s is meshed but service %s uses https://: Emissary originates TLS without Istio's client certificate; drop the scheme to get tls: %s", d.Namespace, quote(svc), quote(tlsContext))
			}
		}
		return skip(ReasonScheme, "service %s has scheme %s://, which decides TLS origination by itself", quote(svc), p.Scheme)
	}
	if p.IsIP {
		return skip(ReasonIP, "service %s is an IP address, not a Kubernetes Service", quote(svc))
	}
	if p.IsLocalhost {
		return skip(ReasonExternal, "service %s is localhost, Emissary's own pod", quote(svc))
	}
	if !p.InCluster {
		return skip(ReasonExternal, "service host %s is not a Kubernetes Service name (name, name.namespace or name.namespace.svc...)", quote(p.Host))
	}

	m, known := meshed(p.Namespace)
	if !known {
		ownTLS = "" // a namespace that is missing (or a failed lookup) is no reason to take tls away
		// "a.b" may as well be an external domain (httpbin.org): no warning on every apply.
		if strings.Count(strings.TrimSuffix(p.Host, "."), ".") != 1 {
			warn("namespace %s (from service %s) was not found, so tls was not set; if it is a namespace created later, re-apply the Mapping", p.Namespace, quote(svc))
		}
		return skip(ReasonNamespaceUnknown, "namespace %s of service %s was not found", p.Namespace, quote(svc))
	}
	if !m {
		return skip(ReasonNotMeshed, "namespace %s of service %s is not meshed", p.Namespace, quote(svc))
	}

	if ownTLS == tlsContext && p.HasPort() {
		d.Reason = ReasonUpToDate
		d.Message = fmt.Sprintf("already has tls: %s because namespace %s is meshed", clip(tlsContext, 200), p.Namespace)
		return d
	}
	d.Default = true
	d.Reason = ReasonDefaulted
	if !p.HasPort() {
		d.Service = pinPort(svc, 80)
		d.Message = fmt.Sprintf("set tls: %s and pinned service %s -> %s because namespace %s is meshed", clip(tlsContext, 200), clip(svc, 200), clip(d.Service, 200), p.Namespace)
		d.Notice = clip(warningPrefix+fmt.Sprintf("set spec.tls: %s and spec.service: %s (port 80, which Emissary used without tls) because namespace %s is meshed; annotate %s: %s to opt out",
			quote(tlsContext), quote(d.Service), p.Namespace, AnnotationTLS, TLSSkip), maxWarningLen-3)
	} else {
		d.Message = fmt.Sprintf("set tls: %s for service %s because namespace %s is meshed", clip(tlsContext, 200), clip(svc, 200), p.Namespace)
		d.Notice = clip(warningPrefix+fmt.Sprintf("set spec.tls: %s for service %s because namespace %s is meshed; annotate %s: %s to opt out",
			quote(tlsContext), quote(svc), p.Namespace, AnnotationTLS, TLSSkip), maxWarningLen-3)
	}
	return d
}

// jsonType names the JSON type of a decoded value, for messages.
func jsonType(v interface{}) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "bool"
	case string:
		return "string"
	case map[string]interface{}:
		return "object"
	case []interface{}:
		return "array"
	case float64, float32, int, int32, int64, uint, uint32, uint64:
		return "number"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// Audit reasons of a Mapping that `webhook audit` lists because the webhook would change it.
const (
	AuditNoTLS    = "no-tls"    // to a meshed namespace, stored without tls
	AuditStaleTLS = "stale-tls" // the webhook's tls, but the upstream is no longer meshed
)

// Audit says whether a stored Mapping, decided as d, is not integrated: the webhook would
// change it (AuditNoTLS, AuditStaleTLS), or it sends plain text or TLS without Istio's
// certificate to a meshed namespace and the webhook leaves it so (d.Reason: opt-out, scheme,
// tls-set).
func Audit(d Decision) (reason string, found bool) {
	switch {
	case d.Default:
		return AuditNoTLS, true
	case d.Revert:
		return AuditStaleTLS, true
	case d.Unprotected:
		return d.Reason, true
	}
	return "", false
}
