package envtest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The GitOps suites run Argo CD's and Flux's own drift code on what the webhook stores:
// bin/tools/argodiff (gitops-engine's pkg/diff, Argo CD's comparison) and bin/tools/fluxdiff
// (fluxcd/pkg/ssa, kustomize-controller's apply and drift check), built from hack/tools by
// `make test`. The objects are Emissary's Deployment in both modes and a Mapping with a bare
// service name in a meshed namespace: the three things the webhook changes.

// gitopsVerdict is one object's line of argodiff's or fluxdiff's answer.
type gitopsVerdict struct {
	Object string          `json:"object"`
	Method string          `json:"method"` // argodiff: three-way, two-way, server-side
	Action string          `json:"action"` // fluxdiff: ssa's created, configured, unchanged
	InSync bool            `json:"inSync"`
	Diff   json.RawMessage `json:"diff"`
}

// gitopsTool is the path of a tool `make test` builds; a test that cannot run it fails.
func gitopsTool(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(RepoRoot(), "bin", "tools", name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is not built: run `make bin/tools/%s` (`make test` builds it): %v", path, name, err)
	}
	return path
}

// runGitopsTool runs tool against this control plane and returns its verdicts by object.
func runGitopsTool(t *testing.T, tool string, args ...string) map[string]gitopsVerdict {
	t.Helper()
	cmd := exec.Command(tool, append([]string{"-kubeconfig", env.Kubeconfig}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(tool), args, err, stderr.String())
	}
	var verdicts []gitopsVerdict
	if err := json.Unmarshal(out, &verdicts); err != nil {
		t.Fatalf("%s %v printed no verdicts: %v\n%s", filepath.Base(tool), args, err, out)
	}
	byObject := map[string]gitopsVerdict{}
	for _, v := range verdicts {
		byObject[v.Object] = v
		t.Logf("%s %s: %s in sync %v %s %s", filepath.Base(tool), strings.Join(args[:len(args)-len(verdicts)], " "), v.Object, v.InSync, v.Method+v.Action, v.Diff)
	}
	return byObject
}

// gitopsObjects are the manifests as a user keeps them in Git, written to files.
type gitopsObjects struct {
	files                     []string
	mapping, sidecar, istioIn string // object keys, Kind/namespace/name
}

// writeGitopsObjects writes, for namespaces meshed (the Mapping's, labelled
// istio-injection=enabled) and edge (Emissary's): the Mapping `service: quote` and the stock
// Emissary Deployment twice, once in the default sidecar mode and once annotated for the
// istio-injector mode.
func writeGitopsObjects(t *testing.T, meshed, edge string) gitopsObjects {
	t.Helper()
	ensureNamespace(t, meshed, "istio-injection=enabled")
	ensureNamespace(t, edge)
	dir := t.TempDir()
	write := func(name string, obj map[string]interface{}) string {
		t.Helper()
		b, err := yaml.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	var mapping map[string]interface{}
	if err := yaml.Unmarshal([]byte(mappingYAML("v3alpha1", meshed, "quote", "  service: quote\n")), &mapping); err != nil {
		t.Fatal(err)
	}
	seed, err := os.ReadFile(testdata("emissary-deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	deployment := func(name string, annotations map[string]string) map[string]interface{} {
		t.Helper()
		d := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(seed, &d.Object); err != nil {
			t.Fatal(err)
		}
		d.SetNamespace(edge)
		d.SetName(name)
		if annotations != nil {
			d.SetAnnotations(annotations)
		}
		return d.Object
	}
	o := gitopsObjects{
		files: []string{
			write("mapping", mapping),
			write("sidecar", deployment("edge-sidecar", nil)),
			write("istio-injector", deployment("edge-istio-injector", map[string]string{"emissary-istio.io/mode": "istio-injector"})),
		},
		mapping: "Mapping/" + meshed + "/quote",
		sidecar: "Deployment/" + edge + "/edge-sidecar",
		istioIn: "Deployment/" + edge + "/edge-istio-injector",
	}
	t.Cleanup(func() {
		for _, f := range o.files {
			_, _, _ = env.Kubectl(nil, "delete", "-f", f, "--ignore-not-found")
		}
	})
	return o
}

func (o gitopsObjects) kubectl(t *testing.T, args ...string) {
	t.Helper()
	for _, f := range o.files {
		if _, _, err := env.Kubectl(nil, append(args, "-f", f)...); err != nil {
			t.Fatal(err)
		}
	}
}

// assertStoredMutated checks that the webhook did change what the engines compare: without
// that, an in-sync verdict would prove nothing.
func (o gitopsObjects) assertStoredMutated(t *testing.T, meshed, edge string) {
	t.Helper()
	m := getMapping(t, "v3alpha1", meshed, "quote")
	svc, _, _ := unstructured.NestedString(m.Object, "spec", "service")
	tls, _, _ := unstructured.NestedString(m.Object, "spec", "tls")
	if svc != "quote:80" || tls != "istio-upstream" {
		stored, _ := yaml.Marshal(m.Object)
		t.Fatalf("stored Mapping: service %q tls %q, want quote:80 and istio-upstream:\n%s", svc, tls, stored)
	}
	if d := getDeployment(t, edge, "edge-sidecar"); countContainers(d, "istio-proxy") != 1 {
		t.Fatalf("the sidecar-mode Deployment was stored without istio-proxy")
	}
	d := getDeployment(t, edge, "edge-istio-injector")
	if d.Spec.Template.Labels["sidecar.istio.io/inject"] != "true" {
		t.Fatalf("the istio-injector-mode Deployment's pod template is not labelled for Istio's injector: %v", d.Spec.Template.Labels)
	}
}

// assertVerdicts compares verdicts with want (object → the diff the engine shows, "" for in
// sync) and requires a verdict for every object.
func assertVerdicts(t *testing.T, what string, got map[string]gitopsVerdict, want map[string]string) {
	t.Helper()
	for object, wantDiff := range want {
		v, ok := got[object]
		switch {
		case !ok:
			t.Errorf("%s: no verdict for %s in %v", what, object, got)
		case wantDiff == "" && !v.InSync:
			t.Errorf("%s: %s is out of sync (%s %s), want in sync; diff: %s", what, object, v.Method, v.Action, v.Diff)
		case wantDiff != "" && v.InSync:
			t.Errorf("%s: %s is in sync (%s %s), want out of sync with %s", what, object, v.Method, v.Action, wantDiff)
		case wantDiff != "" && wantDiff != "*" && !jsonEqual(v.Diff, wantDiff):
			t.Errorf("%s: %s shows the diff %s, want %s", what, object, v.Diff, wantDiff)
		}
	}
}

func jsonEqual(a json.RawMessage, b string) bool {
	var x, y interface{}
	if json.Unmarshal(a, &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

// argoApplication is an Argo CD Application from docs/gitops.md, reduced to what the
// comparison reads.
type argoApplication struct {
	compareOptions    string
	ignoreDifferences []byte // YAML list, or nil
}

// documentedApplications reads the Argo CD Applications that docs/gitops.md shows (its yaml
// blocks with kind: Application): the tests run Argo CD's diff with exactly those settings.
func documentedApplications(t *testing.T) []argoApplication {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(RepoRoot(), "docs/gitops.md"))
	if err != nil {
		t.Fatal(err)
	}
	var apps []argoApplication
	blocks := strings.Split(string(raw), "```yaml\n")
	for _, block := range blocks[1:] {
		block, _, _ = strings.Cut(block, "```")
		var app struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
			Spec struct {
				IgnoreDifferences []map[string]interface{} `json:"ignoreDifferences"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(block), &app); err != nil || app.Kind != "Application" {
			continue
		}
		a := argoApplication{compareOptions: app.Metadata.Annotations["argocd.argoproj.io/compare-options"]}
		if len(app.Spec.IgnoreDifferences) > 0 {
			if a.ignoreDifferences, err = yaml.Marshal(app.Spec.IgnoreDifferences); err != nil {
				t.Fatal(err)
			}
		}
		apps = append(apps, a)
	}
	return apps
}

// args are argodiff's arguments for the Application's settings.
func (a argoApplication) args(t *testing.T) []string {
	t.Helper()
	var args []string
	if a.compareOptions != "" {
		args = append(args, "-compare-options", a.compareOptions)
	}
	if a.ignoreDifferences != nil {
		path := filepath.Join(t.TempDir(), "ignore-differences.yaml")
		if err := os.WriteFile(path, a.ignoreDifferences, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-ignore-differences", path)
	}
	return args
}

func (a argoApplication) String() string {
	if a.compareOptions != "" {
		return "compare-options " + a.compareOptions
	}
	return "ignoreDifferences " + strings.ReplaceAll(strings.TrimSpace(string(a.ignoreDifferences)), "\n", " ")
}
