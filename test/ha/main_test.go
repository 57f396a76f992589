package ha

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
)

// webhookBinEnv names the `webhook` binary the drill runs, built by TestMain before it enters
// the network namespace (where the go command could reach no module proxy).
const webhookBinEnv = "EMISSARY_ISTIO_HA_WEBHOOK"

func TestMain(m *testing.M) {
	if os.Getenv(netnsEnv) == "" {
		dir, err := os.MkdirTemp("", "emissary-istio-ha-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		bin := filepath.Join(dir, "webhook")
		build := exec.Command("go", "build", "-o", bin, "./cmd/webhook")
		build.Dir, build.Stdout, build.Stderr = envtest.RepoRoot(), os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "ha: building the webhook:", err)
			os.Exit(2)
		}
		os.Setenv(webhookBinEnv, bin)
		code := InNetns()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	if code := InNetns(); code >= 0 {
		os.Exit(code)
	}
	// The CA injector's logs are not part of any assertion (each replica's log is a file).
	logf.SetLogger(logr.Discard())
	os.Exit(m.Run())
}
