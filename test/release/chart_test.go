package release

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
)

// chartPackage is the packaged chart in dist/: helm names it <name>-<version>.tgz.
func chartPackage(dist, version string) string {
	return filepath.Join(dist, name+"-"+strings.TrimPrefix(version, "v")+".tgz")
}

// TestChartInstalls: the packaged chart is stamped with the release (version without the v,
// appVersion with it, the licence), and the real helm installs it from the .tgz onto a real
// API server, in the mode that needs no cert-manager; its Deployment runs the release's image.
func TestChartInstalls(t *testing.T) {
	dist, v := distDir(t), version(t)
	pkg := chartPackage(dist, v)
	home := t.TempDir()

	out, err := envtest.Helm(home, nil, "show", "chart", pkg)
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Name, Version, AppVersion string
		Annotations               map[string]string
	}
	if err := yaml.Unmarshal([]byte(out), &meta); err != nil {
		t.Fatal(err)
	}
	if meta.Name != name || meta.Version != strings.TrimPrefix(v, "v") || meta.AppVersion != v {
		t.Errorf("the package is %s %s, appVersion %s; want %s %s, appVersion %s",
			meta.Name, meta.Version, meta.AppVersion, name, strings.TrimPrefix(v, "v"), v)
	}
	if got := meta.Annotations["org.opencontainers.image.licenses"]; got != license {
		t.Errorf("licence annotation %q, want %s", got, license)
	}

	e, err := envtest.Start(envtest.Options{NoWebhook: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	// The chart's mesh-view Role lives in Istio's namespace: the webhook installs after Istio.
	const ns = "emissary-istio-system"
	for _, namespace := range []string{"istio-system", ns} {
		if _, _, err := e.Kubectl(nil, "create", "namespace", namespace); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := envtest.Helm(home, nil, "install", name, pkg, "--namespace", ns,
		"--set", "tls.mode=self-signed", "--kubeconfig", e.Kubeconfig); err != nil {
		t.Fatal(err)
	}
	out, err = envtest.Helm(home, nil, "list", "--namespace", ns, "--output", "json", "--kubeconfig", e.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	var releases []struct{ Name, Status, Chart string }
	if err := json.Unmarshal([]byte(out), &releases); err != nil {
		t.Fatal(err)
	}
	if len(releases) != 1 || releases[0].Status != "deployed" || releases[0].Chart != name+"-"+meta.Version {
		t.Fatalf("helm list: %+v", releases)
	}

	stdout, _, err := e.Kubectl(nil, "get", "deployment", name, "--namespace", ns, "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatal(err)
	}
	image := d.Spec.Template.Spec.Containers[0].Image
	if want := ":" + v; !strings.HasSuffix(image, want) || strings.TrimSuffix(image, want) != imageRepository(t, dist) {
		t.Errorf("the installed Deployment runs %s, want %s%s", image, imageRepository(t, dist), want)
	}
}
