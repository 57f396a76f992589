package envtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Helm runs the real helm that `make helm` builds, with its configuration, cache and data
// in home (so nothing of the machine's leaks in) and extra environment variables env, and
// returns its standard output.
func Helm(home string, env []string, args ...string) (string, error) {
	bin := filepath.Join(RepoRoot(), "bin", "tools", "helm")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%w: run `make helm` (`make test` does)", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), append([]string{"HELM_CACHE_HOME=" + home, "HELM_CONFIG_HOME=" + home, "HELM_DATA_HOME=" + home}, env...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("helm %v: %w: %s", args, err, errOut.String())
	}
	return out.String(), nil
}

// ParseObjects splits a YAML (or JSON) stream of Kubernetes objects, as helm template or
// kustomize print it, into objects; empty documents are dropped.
func ParseObjects(stream []byte) ([]*unstructured.Unstructured, error) {
	var objects []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return objects, nil
		} else if err != nil {
			return nil, err
		}
		if len(u.Object) > 0 {
			objects = append(objects, u)
		}
	}
}

// EmissaryDir is where `make emissary` put Emissary's own chart and manifests, released from
// its Go module (the Makefile says how): charts/emissary-ingress and yaml/. $EMISSARY_DIR as
// the Makefile exports it, else the newest version under bin/emissary.
func EmissaryDir() (string, error) {
	released := func(dir string) bool {
		_, err := os.Stat(filepath.Join(dir, ".released"))
		return err == nil
	}
	if dir := os.Getenv("EMISSARY_DIR"); dir != "" && released(dir) {
		return dir, nil
	}
	if dir := NewestVersionDir(filepath.Join(RepoRoot(), "bin", "emissary"), released); dir != "" {
		return dir, nil
	}
	return "", errors.New("envtest: Emissary's chart and manifests are not in bin/emissary: run `make emissary` (`make test` does)")
}

// EmissaryIstioGuideValues are the Helm values of Emissary's own Istio integration guide
// (2.x/3.x) for its chart.
var EmissaryIstioGuideValues = filepath.Join(RepoRoot(), "test", "envtest", "testdata", "emissary-istio-guide-values.yaml")
