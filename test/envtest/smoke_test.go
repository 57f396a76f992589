package envtest

import (
	"strings"
	"testing"
)

// TestKubectlSmoke proves the loop every end-to-end test relies on: the real kubectl talks
// to the real API server through the harness's kubeconfig.
func TestKubectlSmoke(t *testing.T) {
	if _, _, err := env.Kubectl(nil, "create", "namespace", "smoke"); err != nil {
		t.Fatal(err)
	}
	out, _, err := env.Kubectl(nil, "get", "namespace", "smoke", "-o", "jsonpath={.metadata.name} {.status.phase}")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out); got != "smoke Active" {
		t.Fatalf("kubectl get namespace smoke = %q, want %q", got, "smoke Active")
	}
	version, _, err := env.Kubectl(nil, "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(version, `"gitVersion": "v1.37`) {
		t.Fatalf("server is not the v1.37 build from bin/k8s: %s", version)
	}
}
