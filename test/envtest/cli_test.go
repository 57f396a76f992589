package envtest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"
)

var (
	webhookBinOnce sync.Once
	webhookBin     string
	webhookBinErr  error
)

// webhookBinary builds cmd/webhook once per test run: the CLI is tested as users run it.
func webhookBinary(t *testing.T) string {
	t.Helper()
	webhookBinOnce.Do(func() {
		webhookBin = filepath.Join(env.Dir, "webhook")
		out, err := exec.Command("go", "build", "-o", webhookBin, filepath.Join(RepoRoot(), "cmd", "webhook")).CombinedOutput()
		if err != nil {
			webhookBinErr = err
			webhookBin = string(out)
		}
	})
	if webhookBinErr != nil {
		t.Fatalf("building cmd/webhook: %v\n%s", webhookBinErr, webhookBin)
	}
	return webhookBin
}

// startWebhookProcess starts the binary with args as the user of kubeconfig; it is stopped
// (SIGTERM, then waited for) when the test ends, and its output logged if the test failed.
func startWebhookProcess(t *testing.T, kubeconfig string, args ...string) {
	t.Helper()
	cmd := exec.Command(webhookBinary(t), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	var logs LockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("webhook %v log:\n%s", args, logs.String())
		}
	})
}

func runWebhook(t *testing.T, stdin []byte, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(webhookBinary(t), args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("webhook %v: %v\n%s", args, err, errOut.String())
	}
	return out.String(), errOut.String()
}

// TestInjectPipedIntoKubectl: `webhook inject -f seed.yaml | kubectl apply -f -` stores the
// same pod template as applying the plain seed through the webhook — one code path — and
// the webhook, seeing its own work, leaves it alone.
func TestInjectPipedIntoKubectl(t *testing.T) {
	seed := mustRead(t, testdata("seed-emissary.yaml"))
	ensureNamespace(t, "cli-piped")
	ensureNamespace(t, "cli-plain")

	injected, _ := runWebhook(t, []byte(strings.ReplaceAll(seed, "namespace: ambassador", "namespace: cli-piped")), "inject", "-f", "-")
	_, stderr, err := env.Kubectl([]byte(injected), "apply", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stderr, "injected istio-proxy") {
		t.Errorf("the webhook injected again what `webhook inject` had injected: %s", stderr)
	}
	if _, _, err := env.Kubectl([]byte(strings.ReplaceAll(seed, "namespace: ambassador", "namespace: cli-plain")), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	piped, plain := getDeployment(t, "cli-piped", "ambassador"), getDeployment(t, "cli-plain", "ambassador")
	assertInjected(t, piped, env.Server.Config.Load().Image())
	if !equality.Semantic.DeepEqual(piped.Spec.Template, plain.Spec.Template) {
		t.Fatalf("offline and admission injection differ:\noffline:   %+v\nadmission: %+v", piped.Spec.Template, plain.Spec.Template)
	}
}

// TestInjectMeshFromCluster: with --kubeconfig the CLI reads namespace labels from the
// cluster, as the server does from its cache.
func TestInjectMeshFromCluster(t *testing.T) {
	ensureNamespace(t, "cli-meshed", "istio-injection=enabled")
	ensureNamespace(t, "cli-unmeshed")
	in := mappingYAML("v2", "cli-meshed", "a", "  service: quote\n") + "---\n" +
		mappingYAML("v2", "cli-unmeshed", "b", "  service: quote\n")
	out, _ := runWebhook(t, []byte(in), "inject", "--kubeconfig", env.Kubeconfig, "-f", "-")
	docs := strings.Split(out, "---\n")
	if len(docs) != 2 {
		t.Fatalf("want 2 documents, got:\n%s", out)
	}
	if !strings.Contains(docs[0], "tls: istio-upstream") || !strings.Contains(docs[0], "service: quote:80") {
		t.Errorf("Mapping to a meshed namespace not defaulted:\n%s", docs[0])
	}
	if strings.Contains(docs[1], "tls:") || docs[1] != mappingYAML("v2", "cli-unmeshed", "b", "  service: quote\n") {
		t.Errorf("Mapping to an unmeshed namespace changed:\n%s", docs[1])
	}
}

// TestAuditFindsUnintegratedObjects: objects stored while the webhook could not act (here:
// created in a namespace the webhook configuration excludes, which then loses the
// exclusion) are listed by `webhook audit`, which exits 1; once re-applied, audit is clean
// for them.
func TestAuditFindsUnintegratedObjects(t *testing.T) {
	ensureNamespace(t, "audit", "emissary-istio.io/webhook=disabled", "istio-injection=enabled")
	probe := ProbeDeployment()
	probe.Name, probe.Namespace = "ambassador", "audit"
	deployment, err := yaml.Marshal(probe)
	if err != nil {
		t.Fatal(err)
	}
	seed := "apiVersion: apps/v1\nkind: Deployment\n" + string(deployment)
	mapping := mappingYAML("v2", "audit", "audit-quote", "  service: quote\n")
	for _, m := range []string{seed, mapping} {
		if _, _, err := env.Kubectl([]byte(m), "apply", "-f", "-"); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := env.Kubectl(nil, "label", "namespace", "audit", "emissary-istio.io/webhook-"); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(webhookBinary(t), "audit", "--kubeconfig", env.Kubeconfig)
	out, err := cmd.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("audit exit: %v, want status 1; output:\n%s", err, out)
	}
	for _, want := range []string{"Deployment  audit/ambassador", "Mapping     audit/audit-quote"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("audit output lacks %q:\n%s", want, out)
		}
	}

	// Re-applied with the webhook in the path, both are integrated and audit drops them.
	// (Server-side: a client-side apply of an unchanged file sends no request at all.)
	for _, m := range []string{seed, mapping} {
		if _, _, err := env.Kubectl([]byte(m), "apply", "--server-side", "--force-conflicts", "-f", "-"); err != nil {
			t.Fatal(err)
		}
	}
	out, _ = exec.Command(webhookBinary(t), "audit", "--kubeconfig", env.Kubeconfig).Output()
	if strings.Contains(string(out), "audit/") {
		t.Errorf("audit still lists re-applied objects:\n%s", out)
	}
}
