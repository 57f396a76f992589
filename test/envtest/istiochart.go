package envtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// IstioModule is the directory of the istio.io/istio module hack/tools/istio pins: the
// source of the Istio binaries under test and of Istio's charts.
func IstioModule() (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/istio")
	cmd.Dir = filepath.Join(RepoRoot(), "hack", "tools", "istio")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("envtest: locating the istio.io/istio module: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// IstioDiscoveryChart renders Istio's own istio-discovery chart (what `helm install istiod`
// installs) with the real helm, in namespace istio-system, with the --set values set, and
// returns its objects: the injector webhooks, the revision's ConfigMaps, istiod...
func IstioDiscoveryChart(set ...string) ([]*unstructured.Unstructured, error) {
	dir, err := IstioModule()
	if err != nil {
		return nil, err
	}
	home, err := os.MkdirTemp("", "istio-helm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(home)
	args := []string{"template", "istiod", filepath.Join(dir, "manifests", "charts", "istio-control", "istio-discovery"), "--namespace", "istio-system"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := Helm(home, nil, args...)
	if err != nil {
		return nil, err
	}
	return ParseObjects([]byte(out))
}

// IstioMeshObjects are the objects of a rendered istio-discovery chart that the webhook's
// mesh view reads: the injector and tag MutatingWebhookConfigurations and the ConfigMaps.
func IstioMeshObjects(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range objs {
		if u.GetKind() == "MutatingWebhookConfiguration" || u.GetKind() == "ConfigMap" {
			out = append(out, u)
		}
	}
	return out
}
