package mutate

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
)

// patchAdmit runs the Deployment handler on raw as admission.Webhook does and returns the
// response and the object with its patch applied (raw itself when there is none).
func patchAdmit(t *testing.T, cfg *inject.Config, op admissionv1.Operation, raw []byte) (admission.Response, []byte) {
	t.Helper()
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "patch-test", Operation: op, Namespace: "default", Kind: deploymentGVK,
		Object: runtime.RawExtension{Raw: raw},
	}}
	resp, out := admit(t, &DeploymentHandler{Config: NewConfigHolder(cfg), Metrics: NewMetrics(nil)}, req)
	if !resp.Allowed {
		t.Fatalf("denied: %+v", resp.Result)
	}
	return resp, out
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

// TestDeploymentPatchMatchesGolden: for every pkg/inject golden input, the handler's patch
// turns the request into exactly the golden output, both when it appends (a first injection)
// and when it replaces (a re-render, a removal).
func TestDeploymentPatchMatchesGolden(t *testing.T) {
	dir := filepath.Join("..", "inject", "testdata")
	inputs, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, in := range inputs {
		if strings.HasSuffix(in, ".golden.yaml") || strings.HasSuffix(in, ".config.yaml") {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		n++
		t.Run(name, func(t *testing.T) {
			cfgFile := filepath.Join(dir, name+".config.yaml")
			if _, err := os.Stat(cfgFile); err != nil {
				cfgFile = ""
			}
			cfg, err := inject.LoadConfig(cfgFile)
			if err != nil {
				t.Fatal(err)
			}
			raw := readJSON(t, in)
			resp, out := patchAdmit(t, cfg, admissionv1.Create, raw)

			var got, want appsv1.Deployment
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(readJSON(t, filepath.Join(dir, name+".golden.yaml")), &want); err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(got, want) {
				t.Errorf("patched object differs from the golden output\npatch: %s\ngot:  %s", resp.Patch, out)
			}
			var in appsv1.Deployment
			if err := json.Unmarshal(raw, &in); err != nil {
				t.Fatal(err)
			}
			_, hadStatus := in.Spec.Template.Annotations[inject.AnnotationStatus]
			if appends := bytes.Contains(resp.Patch, []byte(`"path":"/spec/template/spec/containers/-"`)); len(resp.Patch) > 0 && appends == hadStatus {
				t.Errorf("first injection = %t, but the patch appends = %t: %s", !hadStatus, appends, resp.Patch)
			}
		})
	}
	if n < 10 {
		t.Fatalf("only %d inputs in %s", n, dir)
	}
}

// TestDeploymentPatchKeepsUnknownFields: a first injection does not rewrite the user's
// containers, so a field this build's API types do not know (a newer Kubernetes) survives.
func TestDeploymentPatchKeepsUnknownFields(t *testing.T) {
	var obj map[string]interface{}
	if err := json.Unmarshal(readJSON(t, filepath.Join("..", "..", "test", "envtest", "testdata", "seed-emissary.yaml")), &obj); err != nil {
		t.Fatal(err)
	}
	spec := obj["spec"].(map[string]interface{})["template"].(map[string]interface{})["spec"].(map[string]interface{})
	spec["containers"].([]interface{})[0].(map[string]interface{})["futureField"] = "kept"
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	resp, out := patchAdmit(t, inject.DefaultConfig(), admissionv1.Create, raw)
	if len(resp.Patch) == 0 {
		t.Fatal("no patch")
	}
	if !bytes.Contains(out, []byte(`"futureField":"kept"`)) {
		t.Errorf("unknown container field dropped; patch: %s", resp.Patch)
	}
	if _, again := patchAdmit(t, inject.DefaultConfig(), admissionv1.Update, out); !bytes.Equal(again, out) {
		t.Errorf("second admission changed the object")
	}
}
