package mutate

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
//   - An empty tlsContext means DefaultTLSContext.
//   - Annotation emissary-istio.io/tls: "skip" (case-insensitive, spaces trimmed) opts out;
//     any other value of that annotation is ignored with a warning.
//   - Port 0 counts as absent (Emissary's "if not port"), so "quote:0" is pinned to "quote:80".

import (
	"errors"
	"fmt"
	"strings"
)

// Annotation and values read by DecideMapping.
const (
	// AnnotationMappingTLS on a Mapping, set to MappingTLSSkip, opts the Mapping out.
	AnnotationMappingTLS = "emissary-istio.io/tls"
	MappingTLSSkip       = "skip"
	// DefaultTLSContext is the TLSContext written when none is configured (the seed's name).
	DefaultTLSContext = "istio-upstream"
	// AnnotationMappingDefaulted records the spec.tls value this webhook wrote. A tls equal to
	// it is the webhook's, not the user's: it is decided again on every admission (like the
	// Deployment's status annotation), so a client-side re-apply that resets the pinned
	// service to its port-less form gets the port back, and a Mapping whose upstream left the
	// mesh loses the tls the webhook gave it.
	AnnotationMappingDefaulted = "emissary-istio.io/defaulted-tls"
)

// Reasons of a MappingDecision: stable, low-cardinality metric label values.
const (
	MappingReasonDefaulted        = "defaulted"
	MappingReasonTLSSet           = "tls-set"
	MappingReasonScheme           = "scheme"
	MappingReasonIP               = "ip"
	MappingReasonExternal         = "external"
	MappingReasonInvalidService   = "invalid-service"
	MappingReasonNoService        = "no-service"
	MappingReasonResolver         = "resolver"
	MappingReasonOptOut           = "opt-out"
	MappingReasonNotMeshed        = "not-meshed"
	MappingReasonNamespaceUnknown = "namespace-unknown"
	MappingReasonBadSpec          = "bad-spec"
	MappingReasonRedirect         = "redirect"
	MappingReasonUpToDate         = "up-to-date"
)

// MappingReasons lists every Reason DecideMapping returns, e.g. to pre-create metric series.
var MappingReasons = []string{
	MappingReasonDefaulted, MappingReasonTLSSet, MappingReasonScheme, MappingReasonIP,
	MappingReasonExternal, MappingReasonInvalidService, MappingReasonNoService,
	MappingReasonResolver, MappingReasonOptOut, MappingReasonNotMeshed,
	MappingReasonNamespaceUnknown, MappingReasonBadSpec, MappingReasonRedirect, MappingReasonUpToDate,
}

// mappingK8sResolvers are Emissary's built-in Kubernetes resolver names.
var mappingK8sResolvers = map[string]bool{
	"kubernetes-service":  true,
	"kubernetes-endpoint": true,
	"endpoint":            true,
}

// MappingDecision says what to do with one Mapping and why.
type MappingDecision struct {
	Default   bool     // write spec.tls = TLSContext
	Service   string   // new spec.service when the port is pinned (":80" appended); "" = leave service as is
	Reason    string   // stable, low-cardinality reason used as a metric label (MappingReasons)
	Message   string   // one human sentence: what was done and why
	Warnings  []string // user-visible: always one on a mutation; also notable skips
	Namespace string   // the namespace the service means, when known
	TLS       string   // the value for spec.tls when Default (the TLSContext, DefaultTLSContext if none was given)
	// Revert: spec.tls is the webhook's (AnnotationMappingDefaulted) but the Mapping no longer
	// qualifies; remove spec.tls and the annotation. Never set together with Default.
	Revert bool
}

// Changed reports whether the decision changes the Mapping.
func (d MappingDecision) Changed() bool { return d.Default || d.Revert }

// MeshLookup answers whether a namespace is meshed. known=false means the namespace does not
// exist (in the cache).
type MeshLookup func(namespace string) (meshed, known bool)

// mappingWarningPrefix starts every warning, so kubectl users see who speaks.
const mappingWarningPrefix = "emissary-istio: "

// mappingMaxWarningLen bounds a warning: the API server may truncate longer ones.
const mappingMaxWarningLen = 256

// mappingClip cuts s to at most n bytes (plus "..."), for user-controlled text in messages.
func mappingClip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && (s[cut]&0xC0) == 0x80 { // do not split a UTF-8 sequence
		cut--
	}
	return s[:cut] + "..."
}

// mappingQuote quotes user text for messages and warnings (escapes control characters).
func mappingQuote(s string) string { return fmt.Sprintf("%q", mappingClip(s, 64)) }

// DecideMapping inspects an unstructured Mapping object (the whole object as
// map[string]interface{}: apiVersion, kind, metadata, spec) — v1, v2 or v3alpha1 — and
// decides. It never mutates obj and never panics on any input (spec not a map, service not a
// string, tls of any type...). tlsContext is the configured TLSContext name.
func DecideMapping(obj map[string]interface{}, tlsContext string, meshed MeshLookup) MappingDecision {
	if tlsContext == "" {
		tlsContext = DefaultTLSContext
	}
	if meshed == nil {
		meshed = func(string) (bool, bool) { return false, false }
	}
	d := MappingDecision{TLS: tlsContext}
	// ownTLS: spec.tls holds the value this webhook wrote (AnnotationMappingDefaulted), so it
	// is decided again rather than respected as the user's.
	var ownTLS string
	skip := func(reason, format string, args ...interface{}) MappingDecision {
		d.Reason = reason
		if ownTLS != "" {
			d.Revert = true
			d.Message = fmt.Sprintf("removed spec.tls: %s that this webhook had set: ", mappingClip(ownTLS, 200)) + fmt.Sprintf(format, args...)
			d.Warnings = append(d.Warnings, mappingClip(mappingWarningPrefix+d.Message, mappingMaxWarningLen-3))
			return d
		}
		d.Message = "left unchanged: " + fmt.Sprintf(format, args...)
		return d
	}
	warn := func(format string, args ...interface{}) {
		d.Warnings = append(d.Warnings, mappingClip(mappingWarningPrefix+fmt.Sprintf(format, args...), mappingMaxWarningLen-3))
	}

	if obj == nil {
		return skip(MappingReasonBadSpec, "the object is empty")
	}
	if k := obj["kind"]; k != nil {
		if ks, ok := k.(string); !ok || ks != "Mapping" {
			return skip(MappingReasonBadSpec, "kind is %s, not Mapping", mappingQuote(fmt.Sprint(k)))
		}
	}

	var mappingNS string
	var annotations map[string]interface{}
	if mv := obj["metadata"]; mv != nil {
		meta, ok := mv.(map[string]interface{})
		if !ok {
			return skip(MappingReasonBadSpec, "metadata is not an object")
		}
		if nv := meta["namespace"]; nv != nil {
			if mappingNS, ok = nv.(string); !ok {
				return skip(MappingReasonBadSpec, "metadata.namespace is not a string")
			}
		}
		if av := meta["annotations"]; av != nil {
			if annotations, ok = av.(map[string]interface{}); !ok {
				return skip(MappingReasonBadSpec, "metadata.annotations is not an object")
			}
		}
	}

	sv, ok := obj["spec"]
	if !ok || sv == nil {
		return skip(MappingReasonBadSpec, "the Mapping has no spec")
	}
	spec, ok := sv.(map[string]interface{})
	if !ok {
		return skip(MappingReasonBadSpec, "spec is not an object")
	}

	if t, isStr := spec["tls"].(string); isStr && t != "" && annotations[AnnotationMappingDefaulted] == t {
		ownTLS = t
	}

	if av, ok := annotations[AnnotationMappingTLS]; ok {
		if s, isStr := av.(string); isStr && strings.EqualFold(strings.TrimSpace(s), MappingTLSSkip) {
			return skip(MappingReasonOptOut, "the Mapping has annotation %s: %s", AnnotationMappingTLS, MappingTLSSkip)
		}
		warn("annotation %s has value %s; only %q opts out, so it is ignored", AnnotationMappingTLS, mappingQuote(fmt.Sprint(av)), MappingTLSSkip)
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
	k8sResolver := spec["resolver"] == nil || (rIsString && (rname == "" || mappingK8sResolvers[rname]))
	// meshedNS says whether the service's namespace is known to be meshed (for warnings).
	meshedNS := func() bool {
		if d.Namespace == "" {
			return false
		}
		m, known := meshed(d.Namespace)
		return known && m
	}
	plainK8s := svcOK && svcErr == nil && p.Scheme == "" && k8sResolver

	if tv, ok := spec["tls"]; ok && tv != nil && ownTLS == "" {
		switch t := tv.(type) {
		case bool:
			if plainK8s && meshedNS() {
				if t {
					warn("service namespace %s is meshed but tls is true: Emissary originates TLS without Istio's client certificate, which Istio mTLS rejects; use tls: %s", d.Namespace, mappingQuote(tlsContext))
				} else {
					warn("service namespace %s is meshed but tls is false: Emissary will send plain text, which STRICT mTLS rejects", d.Namespace)
				}
			}
			return skip(MappingReasonTLSSet, "spec.tls is already set to %t", t)
		case string:
			if t == "" && plainK8s && meshedNS() {
				warn("service namespace %s is meshed but tls is empty: Emissary will send plain text, which STRICT mTLS rejects", d.Namespace)
			}
			return skip(MappingReasonTLSSet, "spec.tls is already set to %s", mappingQuote(t))
		default:
			return skip(MappingReasonBadSpec, "spec.tls is a %s, not a string or a bool", mappingJSONType(tv))
		}
	}

	// With host_redirect, service is the host a 301 points at, not an upstream: pinning a port
	// would change the redirect (Emissary docs, "Redirects").
	if hr := spec["host_redirect"]; hr != nil && hr != false {
		return skip(MappingReasonRedirect, "host_redirect is set, so service is a redirect target, not an upstream")
	}

	switch v := spec["service"].(type) {
	case nil:
		return skip(MappingReasonNoService, "spec.service is not set")
	case string:
		if v == "" {
			return skip(MappingReasonNoService, "spec.service is empty")
		}
	default:
		return skip(MappingReasonBadSpec, "spec.service is a %s, not a string", mappingJSONType(v))
	}

	if rv := spec["resolver"]; rv != nil {
		r, ok := rv.(string)
		if !ok {
			return skip(MappingReasonBadSpec, "spec.resolver is a %s, not a string", mappingJSONType(rv))
		}
		if r != "" && !mappingK8sResolvers[r] {
			d.Namespace = "" // what the service means is up to that resolver
			return skip(MappingReasonResolver, "resolver %s is not one of Emissary's built-in Kubernetes resolvers (kubernetes-service, kubernetes-endpoint, endpoint)", mappingQuote(r))
		}
	}

	if svcErr != nil {
		if errors.Is(svcErr, ErrNoMappingNamespace) {
			warn("service %s is a bare name but the Mapping's namespace is unknown; tls not set", mappingQuote(svc))
			return skip(MappingReasonNamespaceUnknown, "service %s is a bare name and the Mapping has no namespace", mappingQuote(svc))
		}
		warn("Emissary cannot parse service %s: %s", mappingQuote(svc), mappingClip(svcErr.Error(), 120))
		return skip(MappingReasonInvalidService, "Emissary cannot parse service %s: %s", mappingQuote(svc), mappingClip(svcErr.Error(), 200))
	}

	if p.Scheme != "" {
		if meshedNS() {
			switch p.Scheme {
			case "http":
				warn("service namespace %s is meshed but service %s uses http://: Emissary will send plain text, which STRICT mTLS rejects; drop the scheme to get tls: %s", d.Namespace, mappingQuote(svc), mappingQuote(tlsContext))
			case "https":
				warn("service namespace %s is meshed but service %s uses https://: Emissary originates TLS without Istio's client certificate; drop the scheme to get tls: %s", d.Namespace, mappingQuote(svc), mappingQuote(tlsContext))
			}
		}
		return skip(MappingReasonScheme, "service %s has scheme %s://, which decides TLS origination by itself", mappingQuote(svc), p.Scheme)
	}
	if p.IsIP {
		return skip(MappingReasonIP, "service %s is an IP address, not a Kubernetes Service", mappingQuote(svc))
	}
	if p.IsLocalhost {
		return skip(MappingReasonExternal, "service %s is localhost, Emissary's own pod", mappingQuote(svc))
	}
	if !p.InCluster {
		return skip(MappingReasonExternal, "service host %s is not a Kubernetes Service name (name, name.namespace or name.namespace.svc...)", mappingQuote(p.Host))
	}

	m, known := meshed(p.Namespace)
	if !known {
		ownTLS = "" // a namespace that is missing (or a failed lookup) is no reason to take tls away
		// "a.b" may as well be an external domain (httpbin.org): no warning on every apply.
		if strings.Count(strings.TrimSuffix(p.Host, "."), ".") != 1 {
			warn("namespace %s (from service %s) was not found, so tls was not set; if it is a namespace created later, re-apply the Mapping", p.Namespace, mappingQuote(svc))
		}
		return skip(MappingReasonNamespaceUnknown, "namespace %s of service %s was not found", p.Namespace, mappingQuote(svc))
	}
	if !m {
		return skip(MappingReasonNotMeshed, "namespace %s of service %s is not meshed", p.Namespace, mappingQuote(svc))
	}

	if ownTLS == tlsContext && p.HasPort() {
		d.Reason = MappingReasonUpToDate
		d.Message = fmt.Sprintf("already has tls: %s because namespace %s is meshed", mappingClip(tlsContext, 200), p.Namespace)
		return d
	}
	d.Default = true
	d.Reason = MappingReasonDefaulted
	if !p.HasPort() {
		d.Service = pinServicePort(svc, 80)
		d.Message = fmt.Sprintf("set tls: %s and pinned service %s -> %s because namespace %s is meshed", mappingClip(tlsContext, 200), mappingClip(svc, 200), mappingClip(d.Service, 200), p.Namespace)
		warn("set spec.tls: %s and spec.service: %s (port 80, which Emissary used without tls) because namespace %s is meshed; annotate %s: %s to opt out",
			mappingQuote(tlsContext), mappingQuote(d.Service), p.Namespace, AnnotationMappingTLS, MappingTLSSkip)
	} else {
		d.Message = fmt.Sprintf("set tls: %s for service %s because namespace %s is meshed", mappingClip(tlsContext, 200), mappingClip(svc, 200), p.Namespace)
		warn("set spec.tls: %s for service %s because namespace %s is meshed; annotate %s: %s to opt out",
			mappingQuote(tlsContext), mappingQuote(svc), p.Namespace, AnnotationMappingTLS, MappingTLSSkip)
	}
	return d
}

// mappingJSONType names the JSON type of a decoded value, for messages.
func mappingJSONType(v interface{}) string {
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
