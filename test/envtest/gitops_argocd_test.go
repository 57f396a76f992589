package envtest

import (
	"os"
	"path/filepath"
	"testing"
)

// The diff Argo CD's default comparison shows after a sync: the manifest's value of the one
// field the webhook replaces, the Mapping's service (Emissary takes the port from nothing
// else). Fields the webhook only adds (the Mapping's tls, the Deployments' istio-proxy,
// volumes, env, labels and annotations) are not in the manifest, and Argo CD's diff leaves
// them alone; the istio-injector mode keeps the manifest's sidecar.istio.io/inject annotation.
const argoMappingDiff = `{"spec":{"service":"quote"}}`

// TestGitOpsArgoCD runs Argo CD's own diff (gitops-engine v0.7.3's pkg/diff) on what the
// webhook stores, after objects were synced as Argo CD syncs them (kubectl apply, which
// leaves the last-applied annotation its three-way diff reads): what it reports with its
// defaults, that a sync does not change that (self-heal would loop), and that each Application
// docs/gitops.md shows makes every object in sync while a real drift still shows.
func TestGitOpsArgoCD(t *testing.T) {
	argodiff := gitopsTool(t, "argodiff")
	const meshed, edge = "gitops-argo", "gitops-argo-edge"
	o := writeGitopsObjects(t, meshed, edge)
	o.kubectl(t, "apply")
	o.assertStoredMutated(t, meshed, edge)

	// kubectl's own diff sends a server-side dry-run, through the webhook: clean (exit 0).
	for _, f := range o.files {
		if out, _, err := env.Kubectl(nil, "diff", "-f", f); err != nil {
			t.Errorf("kubectl diff -f %s: %v\n%s", filepath.Base(f), err, out)
		}
	}

	defaults := map[string]string{o.mapping: argoMappingDiff, o.sidecar: "", o.istioIn: ""}
	got := runGitopsTool(t, argodiff, o.files...)
	assertVerdicts(t, "Argo CD's default diff", got, defaults)
	for _, v := range got {
		if v.Method != "three-way" {
			t.Errorf("%s was compared %s, want three-way (kubectl's last-applied annotation)", v.Object, v.Method)
		}
	}

	// A sync applies the manifests again; the webhook writes the same again, so the diff
	// stays: with self-heal, Argo CD would sync forever.
	o.kubectl(t, "apply")
	assertVerdicts(t, "Argo CD's default diff after another sync", runGitopsTool(t, argodiff, o.files...), defaults)

	apps := documentedApplications(t)
	var serverSide, ignoring bool
	for _, app := range apps {
		serverSide = serverSide || app.compareOptions != ""
		ignoring = ignoring || app.ignoreDifferences != nil
		args := append(app.args(t), o.files...)
		assertVerdicts(t, "Argo CD's diff with "+app.String(), runGitopsTool(t, argodiff, args...),
			map[string]string{o.mapping: "", o.sidecar: "", o.istioIn: ""})
	}
	if !serverSide || !ignoring {
		t.Fatalf("docs/gitops.md shows %d Argo CD Applications; want one with compare-options and one with ignoreDifferences", len(apps))
	}

	// A change in Git to the service itself: the server-side diff shows it; ignoreDifferences
	// hides it (docs/gitops.md says so).
	changed := filepath.Join(t.TempDir(), "mapping-quote2.yaml")
	if err := os.WriteFile(changed, []byte(mappingYAML("v3alpha1", meshed, "quote", "  service: quote2\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, app := range apps {
		want := "*"
		if app.compareOptions == "" {
			want = "" // ignored
		}
		assertVerdicts(t, "Argo CD's diff with "+app.String()+" after service: quote2 in Git",
			runGitopsTool(t, argodiff, append(app.args(t), changed)...), map[string]string{o.mapping: want})
	}

	// A real drift still shows with every documented setting: someone edits the live Mapping.
	if _, _, err := env.Kubectl(nil, "patch", "mapping.v3alpha1.getambassador.io", "quote", "-n", meshed,
		"--type=merge", "-p", `{"spec":{"prefix":"/edited/"}}`); err != nil {
		t.Fatal(err)
	}
	for _, app := range apps {
		args := append(app.args(t), o.files...)
		assertVerdicts(t, "Argo CD's diff with "+app.String()+" after an edit", runGitopsTool(t, argodiff, args...),
			map[string]string{o.mapping: "*", o.sidecar: ""})
	}
}
