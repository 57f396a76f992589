package envtest

import (
	"github.com/go-logr/logr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	// Accept -update like every test package, so that `go test ./... -update` runs.
	_ "github.com/emissary-istio/emissary-istio-webhook/test/golden"

	"fmt"
	"os"
	"testing"
)

// env is the control plane with the webhook registered that every test in this package
// shares: starting one costs seconds, and tests use their own namespaces or object names.
var env *Env

func TestMain(m *testing.M) {
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
	var err error
	env, err = Start(Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping envtest:", err)
	}
	os.Exit(code)
}
