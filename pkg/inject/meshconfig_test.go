package inject

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/mesh"
	"github.com/emissary-istio/emissary-istio-webhook/test/golden"
)

// testMesh reads testdata/mesh/istio.yaml: two revisions and a tag, as Istio's chart
// installs them.
func testMesh(t testing.TB) *mesh.Mesh {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "mesh", "istio.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var o mesh.Objects
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		switch {
		case bytes.Contains(doc, []byte("kind: MutatingWebhookConfiguration")):
			var w admissionregistrationv1.MutatingWebhookConfiguration
			if err := yaml.UnmarshalStrict(doc, &w); err != nil {
				t.Fatal(err)
			}
			o.Webhooks = append(o.Webhooks, w)
		case bytes.Contains(doc, []byte("kind: ConfigMap")):
			var cm corev1.ConfigMap
			if err := yaml.UnmarshalStrict(doc, &cm); err != nil {
				t.Fatal(err)
			}
			o.ConfigMaps = append(o.ConfigMaps, cm)
		}
	}
	return mesh.New(o)
}

func view(m *mesh.Mesh, nsLabels map[string]string) MeshView {
	return MeshView{Mesh: m, NamespaceLabels: nsLabels, NamespaceKnown: true}
}

// TestGoldenMesh renders the seed's Deployment in a namespace labelled for the tag
// prod-stable: everything Istio decides comes from revision stable, as its own injector would
// render it.
func TestGoldenMesh(t *testing.T) {
	w := readWorkload(t, "seed-without-proxy")
	cfg, notes := DefaultConfig().ForWorkload(view(testMesh(t), map[string]string{mesh.LabelRev: "prod-stable"}), w)
	if len(notes.Warnings) != 0 || notes.Unavailable {
		t.Fatalf("notes = %+v, want none", notes)
	}
	res := Apply(w, cfg)
	if res.Reason != ReasonInjected {
		t.Fatalf("result %+v", res)
	}
	golden.Assert(t, filepath.Join("testdata", "mesh", "seed-prod-stable.golden.yaml"), toYAML(t, w))

	proxy := w.Template().Spec.Containers[ContainerIndex(w.Template().Spec.Containers, ProxyContainerName)]
	env := map[string]string{}
	for _, e := range proxy.Env {
		env[e.Name] = e.Value
	}
	for name, want := range map[string]string{
		"CA_ADDR":                "istiod-stable.istio-system.svc:15012",
		"PROXY_CONFIG":           `{"discoveryAddress":"istiod-stable.istio-system.svc:15012"}`,
		"TRUST_DOMAIN":           "corp.example",
		"ISTIO_META_MESH_ID":     "corp.example",
		"ISTIO_META_CLUSTER_ID":  "east",
		"ISTIO_META_DNS_CAPTURE": "true",
	} {
		if env[name] != want {
			t.Errorf("env %s = %q, want %q", name, env[name], want)
		}
	}
	if proxy.Image != "registry.example.com/mirror/istio/proxyv2:1.28.2-distroless" || proxy.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %s (%s), want stable's private hub, 1.28.2-distroless, Always", proxy.Image, proxy.ImagePullPolicy)
	}
	if got := proxy.Resources.Limits.Memory().String(); got != "512Mi" {
		t.Errorf("memory limit %s, want stable's 512Mi", got)
	}
	if st, _ := ParseStatus(w.Template()); st.ConfigHash == DefaultConfig().modeHash(ModeSidecar) {
		t.Error("the status hash does not change with what was read from the mesh")
	}
}

func TestForWorkload(t *testing.T) {
	m := testMesh(t)
	seed := func() Workload { return readWorkload(t, "seed-without-proxy") }
	explicit, err := ParseConfig([]byte("apiVersion: emissary-istio.io/v1alpha1\nkind: WebhookConfig\nhub: mirror.example/istio\nistioVersion: 1.29.0\ntrustDomain: mine.example\n"))
	if err != nil {
		t.Fatal(err)
	}
	revisionCfg, err := ParseConfig([]byte("apiVersion: emissary-istio.io/v1alpha1\nkind: WebhookConfig\nrevision: canary\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                 string
		cfg                  *Config
		view                 MeshView
		image, address, td   string
		warning, notice      string
		unavailable, changed bool
	}{
		{"tag on the namespace", DefaultConfig(), view(m, map[string]string{mesh.LabelRev: "prod-stable"}),
			"registry.example.com/mirror/istio/proxyv2:1.28.2-distroless", "istiod-stable.istio-system.svc:15012", "corp.example", "", "", false, true},
		{"revision on the namespace", DefaultConfig(), view(m, map[string]string{mesh.LabelRev: "canary"}),
			"docker.io/istio/proxyv2:1.29.1", "istiod-canary.istio-system.svc:15012", "cluster.local", "", "", false, true},
		{"explicit keys win", explicit, view(m, map[string]string{mesh.LabelRev: "prod-stable"}),
			"mirror.example/istio/proxyv2:1.29.0", "istiod-stable.istio-system.svc:15012", "mine.example", "", "", false, true},
		{"configured revision", revisionCfg, view(m, map[string]string{mesh.LabelRev: "prod-stable"}),
			"docker.io/istio/proxyv2:1.29.1", "istiod-canary.istio-system.svc:15012", "cluster.local", "", "", false, false},
		{"unknown tag", DefaultConfig(), view(m, map[string]string{mesh.LabelRev: "prod-canary"}),
			"docker.io/istio/proxyv2:1.29.1", "istiod.istio-system.svc:15012", "cluster.local", "label istio.io/rev=prod-canary names no revision or tag", "", false, false},
		{"unlabelled namespace, no default revision", DefaultConfig(), view(m, nil),
			"docker.io/istio/proxyv2:1.29.1", "istiod.istio-system.svc:15012", "cluster.local", "no Istio revision serves namespace ambassador", "", false, false},
		{"no Istio", DefaultConfig(), view(mesh.New(mesh.Objects{}), nil),
			"docker.io/istio/proxyv2:1.29.1", "istiod.istio-system.svc:15012", "cluster.local", "", "no Istio found", false, false},
		{"mesh unreadable", DefaultConfig(), MeshView{Unavailable: "cannot list MutatingWebhookConfigurations: forbidden"},
			"docker.io/istio/proxyv2:1.29.1", "istiod.istio-system.svc:15012", "cluster.local", "could not read the Istio mesh (cannot list MutatingWebhookConfigurations: forbidden)", "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, notes := tc.cfg.ForWorkload(tc.view, seed())
			if cfg.Image() != tc.image || cfg.DiscoveryAddress != tc.address || cfg.TrustDomain != tc.td {
				t.Errorf("rendered %s, %s, %s; want %s, %s, %s", cfg.Image(), cfg.DiscoveryAddress, cfg.TrustDomain, tc.image, tc.address, tc.td)
			}
			if got := strings.Join(notes.Warnings, "\n"); (tc.warning == "") != (got == "") || !strings.Contains(got, tc.warning) {
				t.Errorf("warnings %q, want one containing %q", got, tc.warning)
			}
			if got := strings.Join(notes.Notices, "\n"); (tc.notice == "") != (got == "") || !strings.Contains(got, tc.notice) {
				t.Errorf("notices %q, want one containing %q", got, tc.notice)
			}
			if notes.Unavailable != tc.unavailable {
				t.Errorf("Unavailable = %v", notes.Unavailable)
			}
			if tc.warning != "" && !strings.Contains(notes.Warnings[0], "Deployment ambassador/ambassador: ") {
				t.Errorf("warning %q does not name the workload", notes.Warnings[0])
			}
			// A revision that says what the configuration says keeps its hash: an install that
			// switches from a pinned config to reading the mesh restarts nothing.
			if changed := cfg.SidecarHash() != tc.cfg.SidecarHash(); changed != tc.changed {
				t.Errorf("hash changed = %v, want %v", changed, tc.changed)
			}
		})
	}
}
