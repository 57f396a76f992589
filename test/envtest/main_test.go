package envtest

import (
	"fmt"
	"os"
	"testing"

	"github.com/go-logr/logr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/emissary-istio/emissary-istio-webhook/test/kubelet"
)

// env is the control plane with the webhook registered that every test in this package
// shares: starting one costs seconds, and tests use their own namespaces or object names.
var env *Env

func TestMain(m *testing.M) {
	kubelet.MaybeRunSandbox() // this binary is also the sandbox of the Pods a test runs (helm test)
	// Run by helm as its post-renderer (helm_test.go), not as a test.
	if url := os.Getenv(helmPostRenderEnv); url != "" {
		if err := helmPostRender(url, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "post-renderer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// The servers' logs are not part of any assertion; keep test output readable.
	logf.SetLogger(logr.Discard())
	os.Exit(RunSuite(m, Options{}, &env))
}
