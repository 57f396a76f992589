package envtest

import (
	"testing"
)

// TestGitOpsFlux runs Flux's own apply and drift check (fluxcd/pkg/ssa, as kustomize-controller
// runs it: a server-side dry-run apply with its field manager, so through the webhook, compared
// with the stored object) on what the webhook stores. With its defaults every object is in
// sync, whether Flux created the objects or took over what kubectl applied, and the next
// reconciliation applies nothing; a real drift shows and is corrected.
func TestGitOpsFlux(t *testing.T) {
	fluxdiff := gitopsTool(t, "fluxdiff")
	inSync := func(o gitopsObjects) map[string]string {
		return map[string]string{o.mapping: "", o.sidecar: "", o.istioIn: ""}
	}
	actions := func(t *testing.T, what string, got map[string]gitopsVerdict, want string) {
		t.Helper()
		for _, v := range got {
			if v.Action != want {
				t.Errorf("%s: %s %s, want %s; diff: %s", what, v.Object, v.Action, want, v.Diff)
			}
		}
	}

	t.Run("created by Flux", func(t *testing.T) {
		const meshed, edge = "gitops-flux", "gitops-flux-edge"
		o := writeGitopsObjects(t, meshed, edge)
		got := runGitopsTool(t, fluxdiff, append([]string{"-apply"}, o.files...)...)
		if len(got) != 3 {
			t.Fatalf("Flux applied %d objects, want 3: %v", len(got), got)
		}
		actions(t, "Flux's first apply", got, "created")
		o.assertStoredMutated(t, meshed, edge)
		generation := getMapping(t, "v3alpha1", meshed, "quote").GetGeneration()

		assertVerdicts(t, "Flux's drift check", runGitopsTool(t, fluxdiff, o.files...), inSync(o))
		actions(t, "Flux's next reconciliation", runGitopsTool(t, fluxdiff, append([]string{"-apply"}, o.files...)...), "unchanged")
		if again := getMapping(t, "v3alpha1", meshed, "quote").GetGeneration(); again != generation {
			t.Errorf("the Mapping's generation moved from %d to %d without a change", generation, again)
		}

		// A real drift shows, and Flux's next apply corrects it.
		if _, _, err := env.Kubectl(nil, "patch", "mapping.v3alpha1.getambassador.io", "quote", "-n", meshed,
			"--type=merge", "-p", `{"spec":{"prefix":"/edited/"}}`); err != nil {
			t.Fatal(err)
		}
		assertVerdicts(t, "Flux's drift check after an edit", runGitopsTool(t, fluxdiff, o.files...),
			map[string]string{o.mapping: `[{"op":"replace","path":"/spec/prefix","value":"/quote/"}]`, o.sidecar: ""})
		got = runGitopsTool(t, fluxdiff, append([]string{"-apply"}, o.files...)...)
		if got[o.mapping].Action != "configured" {
			t.Errorf("Flux's apply after an edit: %s %s, want configured", o.mapping, got[o.mapping].Action)
		}
		assertVerdicts(t, "Flux's drift check after the correction", runGitopsTool(t, fluxdiff, o.files...), inSync(o))
	})

	t.Run("applied with kubectl then Flux", func(t *testing.T) {
		const meshed, edge = "gitops-flux-kubectl", "gitops-flux-kubectl-edge"
		o := writeGitopsObjects(t, meshed, edge)
		o.kubectl(t, "apply")
		o.assertStoredMutated(t, meshed, edge)
		// Flux takes the objects over: its labels, its field manager, kubectl's annotation and
		// managers removed. That is one apply; after it, nothing.
		actions(t, "Flux's first apply over kubectl's", runGitopsTool(t, fluxdiff, append([]string{"-apply"}, o.files...)...), "configured")
		o.assertStoredMutated(t, meshed, edge)
		assertVerdicts(t, "Flux's drift check", runGitopsTool(t, fluxdiff, o.files...), inSync(o))
		actions(t, "Flux's next reconciliation", runGitopsTool(t, fluxdiff, append([]string{"-apply"}, o.files...)...), "unchanged")
	})
}
