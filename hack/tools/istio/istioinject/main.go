// Command istioinject prints what Istio's own sidecar injector, at the release this module
// pins, renders for a workload of a revision: the istio-proxy container of
// `istioctl kube-inject` (pkg/kube/inject's IntoObject, the injection istiod's webhook runs
// too) and what pkg/kube/inject's ProxyImage returns. The real-Istio suite (test/istio), in
// the webhook's module, which cannot import Istio, runs it to compare the sidecar the
// webhook renders with Istio's on the same ConfigMaps.
//
//	istioinject -injector FILE -mesh FILE [-revision REV] < workload.yaml
//
// -injector is the revision's istio-sidecar-injector[-<rev>] ConfigMap (keys config and
// values), -mesh its istio[-<rev>] ConfigMap (key mesh), both as the API server stores them
// (YAML or JSON). The workload (a Deployment, a Pod...) is read from standard input; its
// sidecar.istio.io/inject label and annotation are dropped (the webhook's own injection sets
// it "false", which Istio rightly honours), so the answer is what Istio would inject. It
// prints one JSON object: {"proxyImage": "...", "proxy": {the istio-proxy container}}.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/kube/inject"
	"istio.io/istio/pkg/log"
)

func main() {
	injectorFile := flag.String("injector", "", "the revision's istio-sidecar-injector ConfigMap (YAML or JSON)")
	meshFile := flag.String("mesh", "", "the revision's istio ConfigMap (YAML or JSON)")
	revision := flag.String("revision", "", "the revision's name (\"\" for the default revision)")
	flag.Parse()
	for _, scope := range log.Scopes() { // only the answer on stdout
		scope.SetOutputLevel(log.ErrorLevel)
	}
	out, err := run(*injectorFile, *meshFile, *revision, os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "istioinject:", err)
		os.Exit(1)
	}
	os.Stdout.Write(append(out, '\n'))
}

// answer is what istioinject prints.
type answer struct {
	ProxyImage string            `json:"proxyImage"`
	Proxy      *corev1.Container `json:"proxy"`
}

func run(injectorFile, meshFile, revision string, workload io.Reader) ([]byte, error) {
	if injectorFile == "" || meshFile == "" {
		return nil, errors.New("-injector and -mesh are required")
	}
	var injector, meshCM corev1.ConfigMap
	for file, into := range map[string]*corev1.ConfigMap{injectorFile: &injector, meshFile: &meshCM} {
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		if err := yaml.Unmarshal(raw, into); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
	}
	raw, err := io.ReadAll(workload)
	if err != nil {
		return nil, err
	}
	a, err := render(injector.Data["config"], injector.Data["values"], meshCM.Data["mesh"], revision, raw)
	if err != nil {
		return nil, err
	}
	return json.Marshal(a)
}

// render injects the workload as `istioctl kube-inject` does with the revision's own
// ConfigMaps (istioctl reads the same keys from the cluster).
func render(config, values, meshYAML, revision string, workload []byte) (*answer, error) {
	cfg, err := inject.UnmarshalConfig([]byte(config))
	if err != nil {
		return nil, err
	}
	templates, err := inject.ParseTemplates(cfg.RawTemplates)
	if err != nil {
		return nil, err
	}
	vc, err := inject.NewValuesConfig(values)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	meshConfig, err := mesh.ApplyMeshConfigDefaults(meshYAML)
	if err != nil {
		return nil, fmt.Errorf("mesh config: %w", err)
	}
	js, err := yaml.YAMLToJSON(workload)
	if err != nil {
		return nil, err
	}
	obj, err := inject.FromRawToObject(js)
	if err != nil {
		return nil, err
	}
	meta, err := podTemplateMeta(obj)
	if err != nil {
		return nil, err
	}
	delete(meta.Labels, "sidecar.istio.io/inject")
	delete(meta.Annotations, "sidecar.istio.io/inject")
	// The proxy config kube-inject gives the template: the mesh's defaultConfig with the
	// pod's proxy.istio.io/config annotation applied.
	proxyMesh := meshConfig
	if pca, ok := meta.Annotations["proxy.istio.io/config"]; ok {
		if proxyMesh, err = mesh.ApplyProxyConfig(pca, meshConfig); err != nil {
			return nil, err
		}
	}
	a := &answer{ProxyImage: inject.ProxyImage(vc.Struct(), proxyMesh.GetDefaultConfig().GetImage(), meta.Annotations)}
	var warnings []string
	injected, err := inject.IntoObject(nil, templates, vc, revision, meshConfig, obj, func(w string) { warnings = append(warnings, w) })
	if err != nil {
		return nil, err
	}
	spec, err := podSpec(injected)
	if err != nil {
		return nil, err
	}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			if cs[i].Name == "istio-proxy" {
				a.Proxy = &cs[i]
			}
		}
	}
	if a.Proxy == nil {
		return nil, fmt.Errorf("Istio injected no istio-proxy: %v", warnings)
	}
	return a, nil
}

func podTemplateMeta(obj any) (*metav1.ObjectMeta, error) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &o.Spec.Template.ObjectMeta, nil
	case *corev1.Pod:
		return &o.ObjectMeta, nil
	}
	return nil, fmt.Errorf("a %T is not supported: give a Deployment or a Pod", obj)
}

func podSpec(obj any) (*corev1.PodSpec, error) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &o.Spec.Template.Spec, nil
	case *corev1.Pod:
		return &o.Spec, nil
	}
	return nil, fmt.Errorf("Istio returned a %T", obj)
}
