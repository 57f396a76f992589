package inject

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// What the sidecar's pilot-agent reads depends on its Istio release. The seed's command line
// (Emissary's guide, written for Istio 1.5) configures the agent with flags; later releases
// dropped most of them, and pilot-agent ignores flags it does not know, so a stale flag fails
// silently (a revisioned istiod is never reached). Decided from pilot/cmd/pilot-agent of
// istio/istio at each release tag, and checked against a real pilot-agent and istiod by
// test/istio:
//
//	setting            1.5                        1.6         1.7 - 1.11    1.12 and later
//	discovery address  --discoveryAddress         PROXY_CONFIG  PROXY_CONFIG  PROXY_CONFIG
//	status port        --statusPort               (15020, the default)
//	connect timeout    --connectTimeout           (10s, the default)
//	bootstrap          --controlPlaneBootstrap    (gone)
//	trust domain       --trust-domain             --trust-domain  TRUST_DOMAIN  TRUST_DOMAIN
//	service cluster    --serviceCluster           --serviceCluster  --serviceCluster  (ignored)
//
// JWT_POLICY first-party-jwt is honoured up to 1.21; from 1.22 the agent treats it as
// third-party-jwt, so Validate rejects it there.

// istioRelease is the major.minor of istioVersion.
type istioRelease struct{ major, minor int }

// minIstioRelease is the oldest release this injector renders for: Istio 1.4 and earlier keep
// mTLS certificates in Secrets and need no sidecar (manifests/components/legacy-istio-1.4).
var minIstioRelease = istioRelease{1, 5}

// Releases at which what the agent reads changed (see the table above).
var (
	releaseProxyConfigEnv  = istioRelease{1, 6}  // PROXY_CONFIG replaces the seed's flags
	releaseTrustDomainEnv  = istioRelease{1, 7}  // TRUST_DOMAIN replaces --trust-domain
	releaseNoServiceClust  = istioRelease{1, 12} // --serviceCluster no longer changes anything
	releaseNoFirstPartyJWT = istioRelease{1, 22} // first-party-jwt treated as third-party-jwt
)

func (r istioRelease) atLeast(o istioRelease) bool {
	return r.major > o.major || (r.major == o.major && r.minor >= o.minor)
}

func (r istioRelease) String() string { return fmt.Sprintf("%d.%d", r.major, r.minor) }

// istioReleaseOf reads the release from an image tag: "1.29.1", "1.29.1-distroless", "1.29".
var istioReleaseOf = regexp.MustCompile(`^(\d+)\.(\d+)(?:[.-]|$)`)

func parseIstioRelease(tag string) (istioRelease, error) {
	m := istioReleaseOf.FindStringSubmatch(tag)
	if m == nil {
		return istioRelease{}, fmt.Errorf("must be an Istio release like %q (a suffix such as -distroless is allowed): the proxy's command line depends on it, got %q", DefaultIstioVersion, tag)
	}
	major, errMajor := strconv.Atoi(m[1])
	minor, errMinor := strconv.Atoi(m[2])
	if errMajor != nil || errMinor != nil {
		return istioRelease{}, fmt.Errorf("release numbers out of range in %q", tag)
	}
	r := istioRelease{major, minor}
	if !r.atLeast(minIstioRelease) {
		return r, fmt.Errorf("is Istio %s, which keeps mTLS certificates in Secrets and needs no sidecar; use the legacy-istio-1.4 component instead (got %q)", r, tag)
	}
	return r, nil
}

// agentArgs is the istio-proxy command line for cfg's Istio release.
func agentArgs(cfg *Config, deployment string) []string {
	r := cfg.release
	args := []string{"proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"}
	if !r.atLeast(releaseNoServiceClust) {
		args = append(args, "--serviceCluster", "istio-proxy-"+deployment)
	}
	if !r.atLeast(releaseProxyConfigEnv) { // the seed's Istio 1.5 flags, in its order
		args = append(args,
			"--discoveryAddress", cfg.DiscoveryAddress,
			"--connectTimeout", "10s",
			"--statusPort", "15020",
			"--trust-domain="+cfg.TrustDomain,
			"--controlPlaneBootstrap=false",
		)
	} else if !r.atLeast(releaseTrustDomainEnv) {
		args = append(args, "--trust-domain="+cfg.TrustDomain)
	}
	return args
}

// Names of the env vars that replaced the seed's flags.
const (
	envProxyConfig = "PROXY_CONFIG"
	envTrustDomain = "TRUST_DOMAIN"
)

// agentEnv is what cfg's Istio release reads from the environment instead of the seed's
// flags, appended after the seed's env list: PROXY_CONFIG (a JSON ProxyConfig, the variable
// Istio's own injection template sets) carries the discovery address, TRUST_DOMAIN the trust
// domain.
func agentEnv(cfg *Config) []corev1.EnvVar {
	var env []corev1.EnvVar
	if cfg.release.atLeast(releaseProxyConfigEnv) {
		env = append(env, corev1.EnvVar{Name: envProxyConfig, Value: proxyConfigJSON(cfg)})
	}
	if cfg.release.atLeast(releaseTrustDomainEnv) {
		env = append(env, corev1.EnvVar{Name: envTrustDomain, Value: cfg.TrustDomain})
	}
	return env
}

// proxyConfigJSON is the ProxyConfig the agent merges over Istio's defaults: only what the
// webhook decides. Its keys are ProxyConfig's JSON names (istio.io/api mesh/v1alpha1).
func proxyConfigJSON(cfg *Config) string {
	b, err := json.Marshal(struct {
		DiscoveryAddress string `json:"discoveryAddress"`
	}{cfg.DiscoveryAddress})
	if err != nil { // cannot happen: a string
		panic(err)
	}
	return string(b)
}
