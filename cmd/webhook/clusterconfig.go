package main

import (
	"context"
	"fmt"
	"path"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mesh"
)

// webhookLabel is what the chart's and kustomize's webhook Deployments are labelled with.
const webhookLabel = "app.kubernetes.io/name=emissary-istio-webhook"

// clusterConfig reads the configuration the running webhook uses: the ConfigMap that its
// Deployment (the chart's or kustomize's, found by label) mounts at the directory of its
// --config file. It returns the source for messages; with no webhook Deployment in the
// cluster, the built-in defaults.
func clusterConfig(ctx context.Context, c client.Reader) (*inject.Config, string, error) {
	sel, err := labels.Parse(webhookLabel)
	if err != nil {
		return nil, "", err
	}
	var deps appsv1.DeploymentList
	if err := c.List(ctx, &deps, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, "", fmt.Errorf("audit: finding the webhook's Deployment: %w", err)
	}
	for _, d := range deps.Items {
		name, key, ok := configMapOf(&d.Spec.Template.Spec)
		if !ok {
			continue
		}
		var cm corev1.ConfigMap
		if err := c.Get(ctx, client.ObjectKey{Namespace: d.Namespace, Name: name}, &cm); err != nil {
			return nil, "", fmt.Errorf("audit: reading the webhook's configuration (ConfigMap %s/%s of Deployment %s/%s): %w", d.Namespace, name, d.Namespace, d.Name, err)
		}
		cfg, err := inject.ParseConfig([]byte(cm.Data[key]))
		if err != nil {
			return nil, "", fmt.Errorf("audit: ConfigMap %s/%s key %s: %w", d.Namespace, name, key, err)
		}
		return cfg, fmt.Sprintf("the configuration of Deployment %s/%s (ConfigMap %s, key %s)", d.Namespace, d.Name, name, key), nil
	}
	return inject.DefaultConfig(), "the built-in defaults (no webhook Deployment labelled " + webhookLabel + " found; --config names a file)", nil
}

// configMapOf finds, in a webhook pod spec, the ConfigMap volume mounted where its
// container's --config file is, and the key (the file's name).
func configMapOf(spec *corev1.PodSpec) (name, key string, ok bool) {
	for _, ctr := range spec.Containers {
		var file string
		for i, a := range ctr.Args {
			if v, found := strings.CutPrefix(a, "--config="); found {
				file = v
			} else if a == "--config" && i+1 < len(ctr.Args) {
				file = ctr.Args[i+1]
			}
		}
		if file == "" {
			continue
		}
		for _, m := range ctr.VolumeMounts {
			if path.Clean(m.MountPath) != path.Dir(file) {
				continue
			}
			for _, v := range spec.Volumes {
				if v.Name == m.Name && v.ConfigMap != nil {
					return v.ConfigMap.Name, path.Base(file), true
				}
			}
		}
	}
	return "", "", false
}

// readMesh lists what the mesh view reads: Istio's injector webhooks and the ConfigMaps of
// its namespace. A cluster where they cannot be read gets an unavailable view that says why.
func readMesh(ctx context.Context, c client.Reader, istioNamespace string) (*mesh.Mesh, string) {
	req, err := labels.NewRequirement(mesh.LabelRev, selection.Exists, nil)
	if err != nil {
		return nil, err.Error()
	}
	var hooks admissionregistrationv1.MutatingWebhookConfigurationList
	if err := c.List(ctx, &hooks, client.MatchingLabelsSelector{Selector: labels.NewSelector().Add(*req)}); err != nil {
		return nil, fmt.Sprintf("listing MutatingWebhookConfigurations: %v", err)
	}
	var cms corev1.ConfigMapList
	if err := c.List(ctx, &cms, client.InNamespace(istioNamespace)); err != nil {
		return nil, fmt.Sprintf("listing ConfigMaps in %s: %v", istioNamespace, err)
	}
	return mesh.New(mesh.Objects{Namespace: istioNamespace, Webhooks: hooks.Items, ConfigMaps: cms.Items}), ""
}
