package istio

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// istioInjection is what Istio's own injector, at the release under test, renders for a
// workload of a revision: hack/tools/istio/istioinject's answer (this module cannot import
// Istio: it pins other k8s.io versions).
type istioInjection struct {
	// ProxyImage is pkg/kube/inject's ProxyImage on the revision's values and mesh config.
	ProxyImage string `json:"proxyImage"`
	// Proxy is the istio-proxy container `istioctl kube-inject` renders.
	Proxy *corev1.Container `json:"proxy"`
}

// istioInjects asks Istio's injector what it renders for workload (a manifest, YAML or JSON)
// with revision's ConfigMaps (istio-sidecar-injector-<rev> and istio-<rev>) as the API server
// stores them: the same objects the webhook reads.
func istioInjects(ctx context.Context, dir, revision string, workload []byte) (*istioInjection, error) {
	suffix := ""
	if revision != "default" {
		suffix = "-" + revision
	}
	args := []string{"-revision", revision}
	for flag, name := range map[string]string{"-injector": "istio-sidecar-injector" + suffix, "-mesh": "istio" + suffix} {
		cm := &corev1.ConfigMap{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "istio-system", Name: name}, cm); err != nil {
			return nil, err
		}
		b, err := json.Marshal(cm)
		if err != nil {
			return nil, err
		}
		file := filepath.Join(dir, name+".json")
		if err := os.WriteFile(file, b, 0o644); err != nil {
			return nil, err
		}
		args = append(args, flag, file)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "istioinject"), args...)
	cmd.Stdin = bytes.NewReader(workload)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("istioinject %v: %w: %s", args, err, stderr.String())
	}
	in := &istioInjection{}
	if err := json.Unmarshal(out, in); err != nil || in.Proxy == nil {
		return nil, fmt.Errorf("istioinject: %v: %s", err, out)
	}
	return in, nil
}
