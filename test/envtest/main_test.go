package envtest

import (
	"fmt"
	"os"
	"testing"

	"github.com/go-logr/logr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// env is the control plane with the webhook registered that every test in this package
// shares: starting one costs seconds, and tests use their own namespaces or object names.
var env *Env

func TestMain(m *testing.M) {
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
