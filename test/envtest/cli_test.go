package envtest

import (
	"bytes"
	"encoding/json"
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
// Static (CGO_ENABLED=0) and -trimpath, as `make image` builds it (so `make test` finds it in
// the build cache): the helm test runs it as the image's entrypoint in a pod's root, which
// has no C library.
func webhookBinary(t *testing.T) string {
	t.Helper()
	webhookBinOnce.Do(func() {
		webhookBin = filepath.Join(env.Dir, "webhook")
		cmd := exec.Command("go", "build", "-trimpath", "-o", webhookBin, filepath.Join(RepoRoot(), "cmd", "webhook"))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
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
// It returns the output so far, which grows while the process runs.
func startWebhookProcess(t *testing.T, kubeconfig string, args ...string) *LockedBuffer {
	t.Helper()
	cmd := exec.Command(webhookBinary(t), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	logs := &LockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
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
	return logs
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
	seed := mustRead(t, testdata("emissary-deployment.yaml"))
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

// auditFinding is one entry of `webhook audit -o json`.
type auditFinding struct {
	Kind, Namespace, Name, Reason, Message string
}

// runAudit runs `webhook audit -o json` on the test cluster and returns its findings in ns
// and its exit status.
func runAudit(t *testing.T, ns string) (map[string]auditFinding, int) {
	t.Helper()
	all, code := auditAll(t)
	found := map[string]auditFinding{}
	for _, f := range all {
		if f.Namespace == ns {
			found[f.Kind+"/"+f.Name] = f
		}
	}
	return found, code
}

// auditAll runs `webhook audit -o json` on the test cluster and returns all its findings and
// its exit status.
func auditAll(t *testing.T) ([]auditFinding, int) {
	t.Helper()
	out, err := exec.Command(webhookBinary(t), "audit", "-o", "json", "--kubeconfig", env.Kubeconfig).Output()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var all []auditFinding
	if err := json.Unmarshal(out, &all); err != nil {
		t.Fatalf("audit -o json: %v\n%s", err, out)
	}
	return all, code
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

	found, code := runAudit(t, "audit")
	if code != 1 || found["Deployment/ambassador"].Reason != "not-injected" || found["Mapping/audit-quote"].Reason != "no-tls" {
		t.Fatalf("audit exit %d, findings %+v; want 1 with Deployment/ambassador not-injected and Mapping/audit-quote no-tls", code, found)
	}
	out, _ := exec.Command(webhookBinary(t), "audit", "--kubeconfig", env.Kubeconfig).Output()
	for _, want := range []string{"audit/ambassador", "audit/audit-quote", "REASON"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("audit's table lacks %q:\n%s", want, out)
		}
	}

	// Re-applied with the webhook in the path, both are integrated and audit drops them.
	// (Server-side: a client-side apply of an unchanged file sends no request at all.)
	for _, m := range []string{seed, mapping} {
		if _, _, err := env.Kubectl([]byte(m), "apply", "--server-side", "--force-conflicts", "-f", "-"); err != nil {
			t.Fatal(err)
		}
	}
	if found, _ := runAudit(t, "audit"); len(found) > 0 {
		t.Errorf("audit still lists re-applied objects: %+v", found)
	}
}

// TestAuditNamesEachMiss: every way an Emissary edge (from Emissary's own chart) or a Mapping
// to a meshed namespace can end up without the integration is listed by `webhook audit`
// with its reason; Emissary's helpers are not. The objects are stored around the webhook (a
// namespace it is told to leave alone), then the advice audit gives fixes one of them.
func TestAuditNamesEachMiss(t *testing.T) {
	const ns, mesh = "audit-misses", "audit-mesh"
	ensureNamespace(t, ns, "emissary-istio.io/webhook=disabled")
	ensureNamespace(t, mesh, "istio-injection=enabled")
	apply := func(doc []byte) {
		t.Helper()
		if _, _, err := env.Kubectl(doc, "apply", "-f", "-"); err != nil {
			t.Fatal(err)
		}
	}
	// Emissary's chart, as releases that each miss the integration in their own way.
	apply(emissaryRelease(t, "ds", ns, "daemonSet=true").yaml)                                                                           // a DaemonSet stored before the webhook handled DaemonSets
	apply(emissaryRelease(t, "pod", ns, "barePod=true").yaml)                                                                            // a bare Pod
	apply(emissaryRelease(t, "unknown", ns, "image.repository=registry.example.com/edge-gateway", "containerNameOverride=gateway").yaml) // nothing says which container is the edge
	apply(emissaryRelease(t, "hostnet", ns, "daemonSet=true", "hostNetwork=true").yaml)
	apply(emissaryRelease(t, "optout", ns, "--set-string=podAnnotations.emissary-istio\\.io/inject=false").yaml)
	// Injected with another Istio version, offline: what an Istio upgrade leaves behind.
	dir := t.TempDir()
	old := filepath.Join(dir, "old.yaml")
	if err := os.WriteFile(old, []byte("apiVersion: emissary-istio.io/v1alpha1\nkind: WebhookConfig\nistioVersion: 1.27.3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stale, _ := runWebhook(t, emissaryRelease(t, "stale", ns).yaml, "inject", "--config", old, "-f", "-")
	apply([]byte(stale))
	// Emissary's CRD conversion webhook shares the edge's image: not a miss.
	apiext := emissaryYAML(t, "emissary-crds.yaml", "Deployment").get(t, "Deployment", "emissary-apiext", nil)
	apiext.SetNamespace(ns)
	apply(toYAML(t, apiext))
	// Mappings to the meshed namespace.
	apply([]byte(mappingYAML("v2", ns, "no-tls", "  service: quote."+mesh+"\n") + "---\n" +
		mappingYAML("v2", ns, "plain-http", "  service: http://quote."+mesh+"\n") + "---\n" +
		mappingYAML("v2", ns, "tls-false", "  service: quote."+mesh+"\n  tls: false\n") + "---\n" +
		strings.Replace(mappingYAML("v2", ns, "opted-out", "  service: quote."+mesh+"\n"), "metadata:\n", "metadata:\n  annotations:\n    emissary-istio.io/tls: skip\n", 1) + "---\n" +
		mappingYAML("v2", ns, "not-meshed", "  service: quote."+ns+"\n")))

	want := map[string]string{
		"DaemonSet/ds-emissary-ingress":       "not-injected",
		"Pod/pod-emissary-ingress":            "not-injected",
		"Deployment/unknown-emissary-ingress": "unknown-image",
		"DaemonSet/hostnet-emissary-ingress":  "host-network",
		"Deployment/optout-emissary-ingress":  "opt-out",
		"Deployment/stale-emissary-ingress":   "stale-config",
		"Mapping/no-tls":                      "no-tls",
		"Mapping/plain-http":                  "scheme",
		"Mapping/tls-false":                   "tls-set",
		"Mapping/opted-out":                   "opt-out",
	}
	found, code := runAudit(t, ns)
	if code != 1 {
		t.Errorf("audit exit status %d, want 1", code)
	}
	for key, reason := range want {
		if f := found[key]; f.Reason != reason || f.Message == "" {
			t.Errorf("%s: audit says %+v, want reason %s", key, f, reason)
		}
	}
	for key, f := range found {
		if _, ok := want[key]; !ok {
			t.Errorf("audit lists %s (%s: %s), which is integrated or none of its business", key, f.Reason, f.Message)
		}
	}

	// Its advice for the DaemonSet, with the webhook in the path again, integrates it.
	if _, _, err := env.Kubectl(nil, "label", "namespace", ns, "emissary-istio.io/webhook-"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(found["DaemonSet/ds-emissary-ingress"].Message, "kubectl rollout restart daemonset ds-emissary-ingress -n "+ns) {
		t.Fatalf("no rollout restart advice: %+v", found["DaemonSet/ds-emissary-ingress"])
	}
	if _, _, err := env.Kubectl(nil, "rollout", "restart", "daemonset", "ds-emissary-ingress", "-n", ns); err != nil {
		t.Fatal(err)
	}
	if found, _ := runAudit(t, ns); found["DaemonSet/ds-emissary-ingress"].Reason != "" {
		t.Errorf("after kubectl rollout restart, audit still lists the DaemonSet: %+v", found["DaemonSet/ds-emissary-ingress"])
	}
}
