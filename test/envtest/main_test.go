package envtest

import (
	"fmt"
	"os"
	"testing"
)

// env is the control plane with the webhook registered that every test in this package
// shares: starting one costs seconds, and tests use their own namespaces or object names.
var env *Env

func TestMain(m *testing.M) {
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
