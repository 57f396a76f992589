package istio

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
	"github.com/emissary-istio/emissary-istio-webhook/test/kubelet"
)

// env is the control plane, with the webhook registered and Istio's CRDs installed, that the
// suite's istiods and sidecars share; bin holds Istio's binaries.
var (
	env *envtest.Env
	bin string
)

func TestMain(m *testing.M) {
	kubelet.MaybeRunSandbox() // this binary is also the pods' sandbox
	logf.SetLogger(logr.Discard())
	var err error
	if bin, err = BinDir(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	crds, err := istioCRDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(envtest.RunSuite(m, envtest.Options{CRDDirs: []string{
		filepath.Join(envtest.RepoRoot(), "test", "envtest", "crds"), crds,
	}}, &env))
}

// istioCRDs is Istio's own CRD file, from the istio.io/istio module hack/tools/istio pins.
func istioCRDs() (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/istio")
	cmd.Dir = filepath.Join(envtest.RepoRoot(), "hack", "tools", "istio")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("istio: locating the istio.io/istio module: %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "manifests", "charts", "base", "files", "crd-all.gen.yaml"), nil
}
