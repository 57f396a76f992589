package envtest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mesh"
)

// meshOf is the Mesh of rendered istio-discovery chart objects.
func meshOf(t *testing.T, objs ...[]byte) *mesh.Mesh {
	t.Helper()
	var o mesh.Objects
	for _, stream := range objs {
		us, err := ParseObjects(stream)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range IstioMeshObjects(us) {
			switch u.GetKind() {
			case "MutatingWebhookConfiguration":
				var w admissionregistrationv1.MutatingWebhookConfiguration
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &w); err != nil {
					t.Fatal(err)
				}
				o.Webhooks = append(o.Webhooks, w)
			case "ConfigMap":
				var cm corev1.ConfigMap
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cm); err != nil {
					t.Fatal(err)
				}
				o.ConfigMaps = append(o.ConfigMaps, cm)
			}
		}
	}
	return mesh.New(o)
}

func renderIstio(t *testing.T, values ...string) []byte {
	t.Helper()
	objs, err := IstioDiscoveryChart(values...)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, u := range objs {
		b.WriteString("---\n")
		b.Write(toYAML(t, u))
	}
	return b.Bytes()
}

// TestShippedConfigsRenderLikeNoConfig: the chart's and kustomize's default configurations
// set no Istio key, so on a cluster with Istio (revision stable, tag prod-stable) and on one
// without, they render exactly what no configuration renders.
func TestShippedConfigsRenderLikeNoConfig(t *testing.T) {
	kustomizeFile, err := os.ReadFile(filepath.Join(RepoRoot(), "manifests", "base", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var chartCM corev1.ConfigMap
	newHelm(t, nil).template().get(t, "ConfigMap", releaseName+"-config", &chartCM)
	withIstio := meshOf(t, renderIstio(t, append(stableValues, "revisionTags={prod-stable}")...), renderIstio(t, canaryValues...))

	seed, err := os.ReadFile(testdata("emissary-deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	render := func(cfg *inject.Config, view inject.MeshView) string {
		var d appsv1.Deployment
		if err := yaml.Unmarshal(seed, &d); err != nil {
			t.Fatal(err)
		}
		w := inject.NewWorkload(&d)
		c, _ := cfg.ForWorkload(view, w)
		inject.Apply(w, c)
		out, err := yaml.Marshal(&d)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	views := map[string]inject.MeshView{
		"Istio, namespace on prod-stable": {Mesh: withIstio, NamespaceLabels: map[string]string{mesh.LabelRev: "prod-stable"}, NamespaceKnown: true},
		"no Istio":                        {Mesh: mesh.New(mesh.Objects{}), NamespaceKnown: true},
	}
	for name, data := range map[string][]byte{"kustomize": kustomizeFile, "chart": []byte(chartCM.Data["config.yaml"])} {
		cfg, err := inject.ParseConfig(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for what, v := range views {
			if got, want := render(cfg, v), render(inject.DefaultConfig(), v); got != want {
				t.Errorf("%s's default configuration, %s: renders otherwise than no configuration:\n%s\nwant\n%s", name, what, got, want)
			}
		}
	}
	if got := render(inject.DefaultConfig(), views["Istio, namespace on prod-stable"]); !bytes.Contains([]byte(got), []byte(stableImage)) {
		t.Fatalf("no configuration on the cluster with Istio does not render stable's image:\n%s", got)
	}
}
