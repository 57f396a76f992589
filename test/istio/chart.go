package istio

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
)

// istioCRDs is Istio's own CRD file.
func istioCRDs() (string, error) {
	dir, err := envtest.IstioModule()
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
	objs, err := envtest.IstioDiscoveryChart(discoveryValues(opts)...)
	return discoveryChart(objs), err
}

// discoveryValues are the chart's --set values for opts; later ones win.
func discoveryValues(opts IstiodOptions) []string {
	trustDomain := opts.TrustDomain
	if trustDomain == "" {
		trustDomain = "cluster.local"
	}
	values := []string{"global.hub=" + inject.DefaultHub, "global.tag=" + inject.DefaultIstioVersion,
		"meshConfig.trustDomain=" + trustDomain}
	if opts.Revision != "" && opts.Revision != "default" {
		values = append(values, "revision="+opts.Revision)
	}
	return append(values, opts.Values...)
}

// revisionTagManifest is what Istio's Helm upgrade guide pipes into `kubectl apply` to point
// revision tags at opts' revision (creating them, or moving them from another revision): the
// chart of that revision rendered with revisionTags, only its revision-tag templates (the
// guide's `helm template ... -s templates/revision-tags-mwc.yaml`): a
// MutatingWebhookConfiguration istio-revision-tag-<tag> and a Service
// istiod-revision-tag-<tag> per tag, the only objects labelled istio.io/tag.
func revisionTagManifest(opts IstiodOptions, tags ...string) ([]byte, error) {
	objs, err := envtest.IstioDiscoveryChart(append(discoveryValues(opts), "revisionTags={"+strings.Join(tags, ",")+"}")...)
	if err != nil {
		return nil, err
	}
	var stream bytes.Buffer
	for _, u := range objs {
		if _, ok := u.GetLabels()["istio.io/tag"]; ok {
			b, err := yaml.Marshal(u.Object)
			if err != nil {
				return nil, err
			}
			stream.WriteString("---\n")
			stream.Write(b)
		}
	}
	if stream.Len() == 0 {
		return nil, fmt.Errorf("istio: the istio-discovery chart rendered no revision tag for %v", tags)
	}
	return stream.Bytes(), nil
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
