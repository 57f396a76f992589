package istio

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
)

// istioModule is the directory of the istio.io/istio module hack/tools/istio pins: the source
// of the binaries under test, of Istio's CRDs and of its charts.
func istioModule() (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/istio")
	cmd.Dir = filepath.Join(envtest.RepoRoot(), "hack", "tools", "istio")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("istio: locating the istio.io/istio module: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// istioCRDs is Istio's own CRD file.
func istioCRDs() (string, error) {
	dir, err := istioModule()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "manifests", "charts", "base", "files", "crd-all.gen.yaml"), nil
}

// discoveryChart is Istio's istio-discovery chart (what `helm install istiod` installs),
// rendered by the real helm for an istiod of opts: its revision, its trust domain, the proxy
// image of the release under test unless opts.Values say otherwise, and opts.Values.
type discoveryChart []*unstructured.Unstructured

func renderDiscoveryChart(opts IstiodOptions) (discoveryChart, error) {
	out, err := helmTemplateDiscovery(opts)
	if err != nil {
		return nil, err
	}
	objs, err := envtest.ParseObjects([]byte(out))
	return discoveryChart(objs), err
}

// revisionTagManifest is what Istio's Helm upgrade guide pipes into `kubectl apply` to point
// revision tags at opts' revision (creating or moving them): the chart of that revision
// rendered with revisionTags, only its revision-tag templates (a MutatingWebhookConfiguration
// istio-revision-tag-<tag> and a Service istiod-revision-tag-<tag> each).
func revisionTagManifest(opts IstiodOptions, tags ...string) ([]byte, error) {
	opts.Values = append(append([]string{}, opts.Values...), "revisionTags={"+strings.Join(tags, ",")+"}")
	out, err := helmTemplateDiscovery(opts, "--show-only", "templates/revision-tags-mwc.yaml", "--show-only", "templates/revision-tags-svc.yaml")
	return []byte(out), err
}

// helmTemplateDiscovery runs `helm template` on the istio-discovery chart for opts, with
// extra arguments.
func helmTemplateDiscovery(opts IstiodOptions, extra ...string) (string, error) {
	dir, err := istioModule()
	if err != nil {
		return "", err
	}
	home, err := os.MkdirTemp("", "istio-helm-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(home)
	trustDomain := opts.TrustDomain
	if trustDomain == "" {
		trustDomain = "cluster.local"
	}
	args := []string{"template", "istiod", filepath.Join(dir, "manifests", "charts", "istio-control", "istio-discovery"),
		"--namespace", "istio-system",
		"--set", "global.hub=" + inject.DefaultHub, "--set", "global.tag=" + inject.DefaultIstioVersion,
		"--set", "meshConfig.trustDomain=" + trustDomain}
	if opts.Revision != "" && opts.Revision != "default" {
		args = append(args, "--set", "revision="+opts.Revision)
	}
	for _, v := range opts.Values { // later --set values win
		args = append(args, "--set", v)
	}
	return envtest.Helm(home, nil, append(args, extra...)...)
}

// get decodes the chart's object of kind and name into into.
func (c discoveryChart) get(kind, name string, into runtime.Object) error {
	for _, u := range c {
		if u.GetKind() == kind && u.GetName() == name {
			return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
		}
	}
	return fmt.Errorf("istio: the istio-discovery chart has no %s %s", kind, name)
}
