package inject

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const header = "apiVersion: emissary-istio.io/v1alpha1\nkind: WebhookConfig\n"

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	for key, got := range map[string]string{
		"image":            c.Image(),
		"discoveryAddress": c.DiscoveryAddress,
		"caAddress":        c.CAAddress,
		"trustDomain":      c.TrustDomain,
		"meshID":           c.MeshID,
		"clusterID":        c.ClusterID,
		"jwtPolicy":        c.JWTPolicy,
		"imagePullPolicy":  string(c.ImagePullPolicy),
		"tlsContext":       c.Mapping.TLSContext,
		"selectors":        strings.Join(c.Mapping.MeshedNamespaceSelectors, " | "),
		"requests":         c.ProxyResources.Requests.Cpu().String() + " " + c.ProxyResources.Requests.Memory().String(),
		"limits":           c.ProxyResources.Limits.Cpu().String() + " " + c.ProxyResources.Limits.Memory().String(),
	} {
		want := map[string]string{
			"image":            "docker.io/istio/proxyv2:1.29.1",
			"discoveryAddress": "istiod.istio-system.svc:15012",
			"caAddress":        "istiod.istio-system.svc:15012",
			"trustDomain":      "cluster.local",
			"meshID":           "cluster.local",
			"clusterID":        "Kubernetes",
			"jwtPolicy":        "third-party-jwt",
			"imagePullPolicy":  "IfNotPresent",
			"tlsContext":       "istio-upstream",
			"selectors":        "istio-injection=enabled | istio.io/rev,istio-injection!=disabled",
			"requests":         "100m 128Mi",
			"limits":           "2 1Gi",
		}[key]
		if got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if *c.ProxyRunAsUser != 0 {
		t.Errorf("proxyRunAsUser = %d, want 0", *c.ProxyRunAsUser)
	}
	// An empty file body is not a config; LoadConfig("") is.
	if c2, err := LoadConfig(""); err != nil || c2.SidecarHash() != c.SidecarHash() {
		t.Errorf("LoadConfig(\"\") = %v, %v", c2, err)
	}
}

func TestConfigRevisionDefaults(t *testing.T) {
	for _, tc := range []struct{ yaml, discovery, ca string }{
		{"revision: 1-28", "istiod-1-28.istio-system.svc:15012", "istiod-1-28.istio-system.svc:15012"},
		{"revision: canary\ncaAddress: ca.example:443", "istiod-canary.istio-system.svc:15012", "ca.example:443"},
		{"discoveryAddress: pilot.example:15012", "pilot.example:15012", "pilot.example:15012"},
		{"revision: 1-28\ndiscoveryAddress: pilot.example:15012", "pilot.example:15012", "pilot.example:15012"},
	} {
		c, err := ParseConfig([]byte(header + tc.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		if c.DiscoveryAddress != tc.discovery || c.CAAddress != tc.ca {
			t.Errorf("%q: discovery %q ca %q, want %q %q", tc.yaml, c.DiscoveryAddress, c.CAAddress, tc.discovery, tc.ca)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"unknown field", header + "hubb: x", []string{`unknown field "hubb"`}},
		{"unknown nested field", header + "mapping: {tlsContexts: x}", []string{`unknown field "mapping.tlsContexts"`}},
		{"duplicate key", header + "hub: a\nhub: b", []string{`"hub"`}},
		{"not yaml", "{", []string{"decoding config"}},
		{"no header", "hub: x", []string{`apiVersion: must be "emissary-istio.io/v1alpha1", got ""`, `kind: must be "WebhookConfig"`}},
		{"bad apiVersion", "apiVersion: v1\nkind: WebhookConfig", []string{`apiVersion: must be "emissary-istio.io/v1alpha1", got "v1"`}},
		{"bad kind", "apiVersion: emissary-istio.io/v1alpha1\nkind: Config", []string{`kind: must be "WebhookConfig", got "Config"`}},
		{"hub slash", header + "hub: docker.io/istio/", []string{"hub: must be a registry/repository prefix"}},
		{"bad version", header + "istioVersion: 1.28.0@sha256:x", []string{"istioVersion: must be an image tag"}},
		{"bad revision", header + "revision: Canary_1", []string{"revision: "}},
		{"bad address", header + "discoveryAddress: istiod", []string{`discoveryAddress: must be host:port, got "istiod"`}},
		{"bad port", header + "caAddress: istiod:99999", []string{"caAddress: must be host:port with a port in 1-65535"}},
		{"jwt", header + "jwtPolicy: none", []string{"jwtPolicy: must be one of third-party-jwt, first-party-jwt"}},
		{"jwt the release ignores", header + "istioVersion: 1.22.0\njwtPolicy: first-party-jwt", []string{"jwtPolicy: Istio 1.22 and later treat first-party-jwt as third-party-jwt"}},
		{"not a release", header + "istioVersion: latest", []string{`istioVersion: must be an Istio release like "1.29.1"`}},
		{"release without a sidecar", header + "istioVersion: 1.4.6", []string{"istioVersion: is Istio 1.4, which keeps mTLS certificates in Secrets", "legacy-istio-1.4"}},
		{"user", header + "proxyRunAsUser: -1", []string{"proxyRunAsUser: must not be negative"}},
		{"pull policy", header + "imagePullPolicy: Sometimes", []string{"imagePullPolicy: must be one of Always, IfNotPresent, Never"}},
		{"requests over limits", header + "proxyResources: {requests: {cpu: '3'}, limits: {cpu: '2'}}", []string{"proxyResources.requests.cpu: must be less than or equal to the limit 2, got 3"}},
		{"negative", header + "proxyResources: {requests: {memory: -1Mi}}", []string{"proxyResources.requests.memory: must not be negative"}},
		{"bad quantity", header + "proxyResources: {requests: {cpu: lots}}", []string{`decoding config: proxyResources.requests.cpu: "lots" is not a quantity`}},
		{"tls context", header + "mapping: {tlsContext: Istio_Upstream}", []string{"mapping.tlsContext: "}},
		{"bad selector", header + "mapping: {meshedNamespaceSelectors: ['istio-injection=enabled', 'istio.io/rev in (']}", []string{"mapping.meshedNamespaceSelectors[1]: invalid label selector"}},
		{"empty selector", header + "mapping: {meshedNamespaceSelectors: ['']}", []string{"mapping.meshedNamespaceSelectors[0]: must not be empty"}},
		{"aggregated", "apiVersion: x\nkind: WebhookConfig\njwtPolicy: none\nimagePullPolicy: x", []string{"apiVersion: ", "jwtPolicy: ", "imagePullPolicy: "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error, got %+v", c)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateEmptyHub(t *testing.T) {
	c := DefaultConfig()
	c.Hub = ""
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "hub: must not be empty") {
		t.Errorf("got %v", err)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte(header+"istioVersion: 1.27.3\nmapping:\n  meshedNamespaceSelectors: [mesh=on]\n"), 0o644)
	os.WriteFile(bad, []byte(header+"jwtPolicy: nope\n"), 0o644)

	c, err := LoadConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	if c.Image() != "docker.io/istio/proxyv2:1.27.3" {
		t.Errorf("image %s", c.Image())
	}
	if !c.Mapping.Meshed(map[string]string{"mesh": "on"}) || c.Mapping.Meshed(map[string]string{"istio-injection": "enabled"}) {
		t.Errorf("the configured selectors are not the ones matched: %v", c.Mapping.MeshedNamespaceSelectors)
	}
	for _, path := range []string{bad, filepath.Join(dir, "missing.yaml")} {
		if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("LoadConfig(%s): error %v does not name the file", path, err)
		}
	}
}

// An explicit empty list of selectors turns Mapping defaulting off instead of restoring the
// defaults.
func TestMeshedSelectorsExplicitlyEmpty(t *testing.T) {
	c, err := ParseConfig([]byte(header + "mapping: {meshedNamespaceSelectors: []}"))
	if err != nil || c.Mapping.Meshed(map[string]string{"istio-injection": "enabled"}) {
		t.Errorf("explicit empty list: %+v, %v", c.Mapping, err)
	}
}

func TestSidecarHash(t *testing.T) {
	parse := func(y string) *Config {
		t.Helper()
		c, err := ParseConfig([]byte(header + y))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	base := DefaultConfig().SidecarHash()
	if len(base) != 12 {
		t.Errorf("hash %q is not 12 hex digits", base)
	}
	// Stable: same settings, however written, same hash.
	for _, y := range []string{
		"",
		"hub: docker.io/istio\nistioVersion: 1.29.1",
		"proxyResources: {requests: {cpu: 0.1, memory: 128Mi}, limits: {cpu: '2', memory: 1Gi}}",
		"discoveryAddress: istiod.istio-system.svc:15012",
		"mapping: {tlsContext: other, meshedNamespaceSelectors: [a=b]}", // not a sidecar setting
	} {
		if got := parse(y).SidecarHash(); got != base {
			t.Errorf("%q: hash %s, want %s", y, got, base)
		}
	}
	// Sensitive: every sidecar setting changes it.
	seen := map[string]string{base: "defaults"}
	for _, y := range []string{
		"hub: gcr.io/istio-release", "istioVersion: 1.28.1", "revision: 1-28",
		"caAddress: ca.example:15012", "trustDomain: example.org", "meshID: m", "clusterID: c",
		"istioVersion: 1.21.0", "istioVersion: 1.21.0\njwtPolicy: first-party-jwt", "proxyRunAsUser: 1337", "proxyResources: {limits: {cpu: '1'}}",
		"imagePullPolicy: Always",
	} {
		h := parse(y).SidecarHash()
		if prev, dup := seen[h]; dup {
			t.Errorf("%q: hash %s equals that of %s", y, h, prev)
		}
		seen[h] = y
	}
}
