package mapping

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPure: this package is pure decisions, and so is pkg/inject, which reads its
// configuration section from here. Their dependency closures have no Kubernetes client, no
// controller-runtime and no Prometheus, so that the CLI and tests use them without the
// server, and importing them registers no metrics and starts nothing.
func TestPure(t *testing.T) {
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list dependencies: %v", err)
	}
	for _, pkg := range []string{".", "../inject"} {
		out, err := exec.Command(gocmd, "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		for _, forbidden := range []string{"sigs.k8s.io/controller-runtime", "k8s.io/client-go", "github.com/prometheus/"} {
			for _, d := range deps {
				if strings.HasPrefix(d, forbidden) {
					t.Errorf("%s depends on %s", deps[len(deps)-1], d)
				}
			}
		}
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s listed %d packages: %q", pkg, len(deps), deps)
		}
		t.Logf("%s: %d packages in the dependency closure", deps[len(deps)-1], len(deps))
	}
}
