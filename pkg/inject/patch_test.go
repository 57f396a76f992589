package inject

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	evanphx "github.com/evanphx/json-patch/v5"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"
)

// patched decodes raw (a kind) as the webhook does, runs WorkloadPatch and returns its patch
// and raw with the patch applied (raw itself when there is none).
func patched(t *testing.T, cfg *Config, kind string, raw []byte) (patch, out []byte) {
	t.Helper()
	w, err := DecodeWorkload(kind, raw)
	if err != nil {
		t.Fatal(err)
	}
	_, patch, err = WorkloadPatch(w, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if patch == nil {
		return nil, raw
	}
	ops, err := evanphx.DecodePatch(patch)
	if err != nil {
		t.Fatalf("undecodable patch %s: %v", patch, err)
	}
	if out, err = ops.Apply(raw); err != nil {
		t.Fatalf("patch %s does not apply: %v", patch, err)
	}
	return patch, out
}

func readJSON(t *testing.T, file string) []byte {
	t.Helper()
	y, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// TestWorkloadPatchMatchesGolden: for every golden input, the patch turns the object into
// exactly the golden output, both when it appends (a first injection) and when it replaces
// (a re-render, a removal).
func TestWorkloadPatchMatchesGolden(t *testing.T) {
	names := inputNames(t)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			raw := readJSON(t, filepath.Join("testdata", name+".yaml"))
			in := readWorkload(t, name)
			patch, out := patched(t, configFor(t, name), in.Kind(), raw)

			got, err := DecodeWorkload(in.Kind(), out)
			if err != nil {
				t.Fatal(err)
			}
			want, err := DecodeWorkload(in.Kind(), readJSON(t, filepath.Join("testdata", name+".golden.yaml")))
			if err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(got, want) {
				t.Errorf("patched object differs from the golden output\npatch: %s\ngot:  %s", patch, out)
			}
			_, hadStatus := in.Template().Annotations[AnnotationStatus]
			// A re-render or removal writes the containers whole; a first injection only appends
			// (to them, to the init containers, or only to volumes, env and mounts).
			if appends := !bytes.Contains(patch, []byte(`"path":"`+in.TemplatePath()+`/spec/containers",`)); len(patch) > 0 && appends == hadStatus {
				t.Errorf("first injection = %t, but the patch appends = %t: %s", !hadStatus, appends, patch)
			}
		})
	}
	if len(names) < 10 {
		t.Fatalf("only %d inputs in testdata", len(names))
	}
}

// TestDeploymentPatchKeepsUnknownFields: a first injection does not rewrite the user's
// containers, so a field this build's API types do not know (a newer Kubernetes) survives.
func TestDeploymentPatchKeepsUnknownFields(t *testing.T) {
	var obj map[string]interface{}
	if err := json.Unmarshal(readJSON(t, filepath.Join("testdata", "seed-without-proxy.yaml")), &obj); err != nil {
		t.Fatal(err)
	}
	spec := obj["spec"].(map[string]interface{})["template"].(map[string]interface{})["spec"].(map[string]interface{})
	spec["containers"].([]interface{})[0].(map[string]interface{})["futureField"] = "kept"
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	patch, out := patched(t, DefaultConfig(), KindDeployment, raw)
	if len(patch) == 0 {
		t.Fatal("no patch")
	}
	if !bytes.Contains(out, []byte(`"futureField":"kept"`)) {
		t.Errorf("unknown container field dropped; patch: %s", patch)
	}
	if patch, again := patched(t, DefaultConfig(), KindDeployment, out); patch != nil || !bytes.Equal(again, out) {
		t.Errorf("second admission changed the object: %s", patch)
	}
}

// TestDecodeWorkloadIsCaseSensitive: "Spec" is not spec, as for the API server.
func TestDecodeWorkloadIsCaseSensitive(t *testing.T) {
	w, err := DecodeWorkload(KindDeployment, []byte(`{"Spec":{"replicas":3}}`))
	if err != nil {
		t.Fatal(err)
	}
	if w.(DeploymentWorkload).Spec.Replicas != nil {
		t.Errorf("Spec was read as spec")
	}
}
