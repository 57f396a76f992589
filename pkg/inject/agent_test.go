package inject

import (
	"slices"
	"strings"
	"testing"
)

// TestAgentCommandLinePerRelease: the istio-proxy args and the env that replaces them, for each
// row of the table in agent.go. Istio 1.5 gets the seed's command line exactly; later releases
// get only what they read. test/istio shows the current release on a real pilot-agent.
func TestAgentCommandLinePerRelease(t *testing.T) {
	seedArgs := []string{"proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
		"--serviceCluster", "istio-proxy-ambassador", "--discoveryAddress", "istiod.istio-system.svc:15012",
		"--connectTimeout", "10s", "--statusPort", "15020", "--trust-domain=cluster.local", "--controlPlaneBootstrap=false"}
	base := []string{"proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"}
	const proxyConfig = `PROXY_CONFIG={"discoveryAddress":"istiod.istio-system.svc:15012"}`
	for _, tc := range []struct {
		config string
		args   []string
		env    []string // what follows the seed's env list
	}{
		{"istioVersion: 1.5.10", seedArgs, nil},
		{"istioVersion: 1.6.14", append(slices.Clone(base), "--serviceCluster", "istio-proxy-ambassador", "--trust-domain=cluster.local"),
			[]string{proxyConfig}},
		{"istioVersion: 1.7.0", append(slices.Clone(base), "--serviceCluster", "istio-proxy-ambassador"),
			[]string{proxyConfig, "TRUST_DOMAIN=cluster.local"}},
		{"istioVersion: 1.11.8", append(slices.Clone(base), "--serviceCluster", "istio-proxy-ambassador"),
			[]string{proxyConfig, "TRUST_DOMAIN=cluster.local"}},
		{"istioVersion: 1.12.0", base, []string{proxyConfig, "TRUST_DOMAIN=cluster.local"}},
		{"", base, []string{proxyConfig, "TRUST_DOMAIN=cluster.local"}},
		{"istioVersion: 1.29.1-distroless\nrevision: canary\ntrustDomain: example.org", base,
			[]string{`PROXY_CONFIG={"discoveryAddress":"istiod-canary.istio-system.svc:15012"}`, "TRUST_DOMAIN=example.org"}},
		{"istioVersion: 2.0.0\ndiscoveryAddress: xds.example:15012", base,
			[]string{`PROXY_CONFIG={"discoveryAddress":"xds.example:15012"}`, "TRUST_DOMAIN=cluster.local"}},
	} {
		t.Run(tc.config, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(header + tc.config))
			if err != nil {
				t.Fatal(err)
			}
			c := ProxyContainer(cfg, "ambassador")
			if !slices.Equal(c.Args, tc.args) {
				t.Errorf("args\n got %q\nwant %q", c.Args, tc.args)
			}
			var env []string
			for _, e := range c.Env[len(c.Env)-len(agentEnv(cfg)):] {
				env = append(env, e.Name+"="+e.Value)
			}
			if !slices.Equal(env, tc.env) {
				t.Errorf("env\n got %q\nwant %q", env, tc.env)
			}
			if n := len(c.Env) - len(tc.env); n != 13 {
				t.Errorf("%d env vars before the agent's, want the seed's 13", n)
			}
		})
	}
}

func TestParseIstioRelease(t *testing.T) {
	for tag, want := range map[string]string{
		"1.29.1": "1.29", "1.29.1-distroless": "1.29", "1.29": "1.29", "1.5.0": "1.5", "2.0.0-rc.1": "2.0",
		"1.4.6": "error", "latest": "error", "v1.29.1": "error", "1.29x": "error", "1": "error",
		"1.99999999999999999999.0": "error",
	} {
		r, err := parseIstioRelease(tag)
		got := r.String()
		if err != nil {
			got = "error"
			if !strings.Contains(err.Error(), tag) {
				t.Errorf("%q: error %q does not name the tag", tag, err)
			}
		}
		if got != want {
			t.Errorf("%q: %s, want %s (%v)", tag, got, want, err)
		}
	}
}
