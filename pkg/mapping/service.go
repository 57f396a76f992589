package mapping

// Emissary's reading of a Mapping's `service` string, "[scheme://]host[:port][/path...]".
//
// Followed from emissary-ingress/emissary (v3.x):
//
//   - pkg/emissaryutil/svc.go ParseServiceName and wouldConfuseURLParse, the Go twin of
//     python/ambassador/ir/irbasemapping.py normalize_service_name / would_confuse_urlparse:
//     a string without "scheme://" or "//" is parsed as "//"+s by net/url; the port is split
//     with net.SplitHostPort and must fit in 16 bits; an empty host is an error. Errors here
//     are exactly Emissary's errors (a bare IPv6 address without brackets, "host:99999",
//     "host:notaport", "a:1:2", an unbalanced "[" ...).
//   - irbasemapping.py normalize_service_name: a host with no "." and no ":" (and not
//     "localhost") is qualified with the Mapping's own namespace, so a bare name means the
//     Mapping's namespace (unless the Ambassador Module sets
//     use_ambassador_namespace_for_service_resolution, which this webhook cannot see). The
//     service string is rebuilt from scheme, host and port only, so a path, query or fragment
//     is dropped.
//   - python/ambassador/ir/irserviceresolver.py parse_service: "svc.namespace[.anything]" means
//     the first two labels, service and namespace (svc.split(".", 2)[0:2]); IP addresses
//     (is_ip_address) are never Kubernetes Services.
//   - python/ambassador/ir/ircluster.py: "https://" forces TLS origination, "http://" forbids
//     it, any other scheme is reported as unknown and stripped; a port that is absent or 0
//     ("if not port") becomes 443 when TLS is originated and 80 otherwise.
//
// Where the default resolver, KubernetesServiceResolver, just hands the (qualified) host to
// DNS, cluster DNS decides: "name.ns", "name.ns.svc" and "name.ns.svc.<cluster domain>" reach
// Service name in namespace ns, while a name of three or more labels whose third label is not
// "svc" (api.example.com) goes outside the cluster. ParsedService.InCluster records that.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// ParsedService is what Emissary understands from a Mapping's `service` string:
// [scheme://]host[:port][/path...]
type ParsedService struct {
	Scheme    string // "", "http", "https" (lower-cased); any other scheme is kept, lower-cased
	Host      string // as written, without port; an IPv6 literal without its brackets
	Port      string // "" when absent; as written otherwise ("0" means absent to Emissary)
	Name      string // service name for a Kubernetes host ("quote"), lower-cased
	Namespace string // namespace the service lives in: from the host ("quote.default" → default; "quote.default.svc.cluster.local" → default), or the Mapping's own namespace for a bare name; lower-cased
	IsIP      bool   // IPv4 or IPv6 literal

	// IsLocalhost is set for the host "localhost": Emissary's own pod, never qualified with a
	// namespace (irbasemapping.py). Name and Namespace are empty.
	IsLocalhost bool
	// InCluster is set when the host names a Kubernetes Service: a bare name, name.ns, or
	// name.ns.svc[.<cluster domain>], each label a DNS-1123 label. An external name such as
	// api.example.com still gets Emissary's endpoint-resolver reading (Name "api", Namespace
	// "example") but InCluster is false: cluster DNS would not send it to that Service.
	InCluster bool
	// HasPath is set when a path, query or fragment follows the host; Emissary ignores it.
	HasPath bool
}

// ErrNoNamespace is returned (wrapped) by ParseService for a bare service name when the
// Mapping's namespace is not known, so the namespace the service means is not known either.
var ErrNoNamespace = errors.New("bare service name and the Mapping's namespace is unknown")

// schemeChars mimics Python's urllib.parse.scheme_chars, as Emissary does.
const schemeChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-."

// wouldConfuseURLParse is Emissary's wouldConfuseURLParse: true when s has neither a
// "scheme://" nor a leading "//", so that "host:8080" must not be read as scheme "host".
func wouldConfuseURLParse(s string) bool {
	if strings.Contains(s, ":") && strings.HasPrefix(strings.TrimLeft(s, schemeChars), "://") {
		return false
	}
	return !strings.HasPrefix(s, "//")
}

// ParseService parses s the way Emissary does. mappingNamespace is used for bare names.
//
// The error is Emissary's when Emissary rejects s. A bare name with an empty mappingNamespace
// returns an error wrapping ErrNoNamespace (with Name and Host set). On success,
// Namespace is non-empty for every host that is neither an IP literal nor "localhost".
func ParseService(s, mappingNamespace string) (ParsedService, error) {
	var p ParsedService
	in := s
	if wouldConfuseURLParse(in) {
		in = "//" + in
	}
	u, err := url.Parse(in)
	if err != nil {
		return p, fmt.Errorf("service %q: %w", s, err)
	}
	host := u.Hostname()
	port := u.Port()
	if port != "" {
		// net.SplitHostPort validates what url.URL.Port() does not (Emissary does the same).
		host, port, err = net.SplitHostPort(u.Host)
		if err != nil {
			return p, fmt.Errorf("service %q: %w", s, err)
		}
	}
	if host == "" {
		return p, fmt.Errorf("service %q: address %s: no hostname", s, u.Host)
	}
	if port != "" {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return p, fmt.Errorf("service %q: port %s: %w", s, port, err)
		}
	}
	p.Scheme = u.Scheme // net/url lower-cases it
	p.Host = host
	p.Port = port
	p.HasPath = u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != ""

	if _, err := netip.ParseAddr(host); err == nil {
		p.IsIP = true
		return p, nil
	}
	if strings.Contains(host, ":") {
		// Not an IP literal, yet Emissary would bracket it as one ("[:::]"); no resolver can use it.
		return p, fmt.Errorf("service %q: host %q is neither an IP address nor a DNS name", s, host)
	}
	if strings.EqualFold(host, "localhost") {
		p.IsLocalhost = true
		return p, nil
	}

	// A trailing dot makes the name absolute: DNS skips the search list, so only
	// name.ns.svc.<cluster domain>. still reaches a Service.
	name := strings.ToLower(host)
	absolute := strings.HasSuffix(name, ".")
	name = strings.TrimSuffix(name, ".")
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" {
			return p, fmt.Errorf("service %q: host %q has an empty label", s, host)
		}
	}
	p.Name = labels[0]
	switch {
	case len(labels) == 1 && absolute:
		return p, fmt.Errorf("service %q: host %q is an absolute single-label name, not a Service", s, host)
	case len(labels) == 1:
		if mappingNamespace == "" {
			return p, fmt.Errorf("service %q: %w", s, ErrNoNamespace)
		}
		p.Namespace = strings.ToLower(mappingNamespace)
		p.InCluster = true
	default:
		// irserviceresolver.py parse_service: the first two labels.
		p.Namespace = labels[1]
		p.InCluster = (len(labels) == 2 && !absolute) || (len(labels) >= 3 && labels[2] == "svc")
	}
	if p.InCluster && (len(validation.IsDNS1123Label(p.Name)) > 0 || len(validation.IsDNS1123Label(p.Namespace)) > 0) {
		p.InCluster = false
	}
	// Every label, not only the two that name the Service: cluster DNS resolves no other
	// name, and a host such as "q.ns.svc.]" parses only without a port ("q.ns.svc.]:80"
	// fails net.SplitHostPort), so pinning its port would break the Mapping.
	for _, l := range labels[min(2, len(labels)):] {
		if p.InCluster && len(validation.IsDNS1123Label(l)) > 0 {
			p.InCluster = false
		}
	}
	return p, nil
}

// HasPort reports whether the service names a port Emissary will use. A port of 0 counts as
// absent, as in Emissary's ircluster.py ("if not port").
func (p ParsedService) HasPort() bool {
	if p.Port == "" {
		return false
	}
	n, err := strconv.ParseUint(p.Port, 10, 16)
	return err == nil && n != 0
}

// EffectivePort is the port Emissary connects to: the service's own, or (ircluster.py) 443
// when it originates TLS and 80 when it does not.
func (p ParsedService) EffectivePort(originatesTLS bool) uint16 {
	if p.HasPort() {
		n, _ := strconv.ParseUint(p.Port, 10, 16)
		return uint16(n)
	}
	if originatesTLS {
		return 443
	}
	return 80
}

// pinPort returns s with its port set to port (an existing port, empty or 0, is
// replaced), keeping any scheme, "//", userinfo and path/query/fragment where they were:
// "quote" → "quote:80", "quote/x" → "quote:80/x", "quote:" → "quote:80". s must have parsed
// with ParseService.
func pinPort(s string, port uint16) string {
	start := 0
	if !wouldConfuseURLParse(s) {
		if i := strings.Index(s, "//"); i >= 0 {
			start = i + 2
		}
	}
	end := len(s)
	if i := strings.IndexAny(s[start:], "/?#"); i >= 0 {
		end = start + i
	}
	auth := s[start:end]
	userinfo := ""
	if i := strings.LastIndex(auth, "@"); i >= 0 {
		userinfo, auth = auth[:i+1], auth[i+1:]
	}
	if strings.HasPrefix(auth, "[") {
		if i := strings.Index(auth, "]"); i >= 0 {
			auth = auth[:i+1]
		}
	} else if i := strings.LastIndex(auth, ":"); i >= 0 {
		auth = auth[:i]
	}
	return s[:start] + userinfo + auth + ":" + strconv.Itoa(int(port)) + s[end:]
}
