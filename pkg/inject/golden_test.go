package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/emissary-istio/emissary-istio-webhook/test/golden"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"
)

// Every testdata/<name>.yaml input must be listed here with the decision it must produce; the
// full output is in <name>.golden.yaml and the Result in <name>.result.golden.txt. A
// <name>.config.yaml beside the input replaces DefaultConfig().
var goldenCases = []struct {
	name     string
	action   Action
	reason   string
	warnings int
}{
	{"seed-without-proxy", Injected, ReasonInjected, 0},
	{"seed-hand-written", Skipped, ReasonHandWrittenSidecar, 1},
	{"emissary-3x", Injected, ReasonInjected, 0},
	{"helm-4x", Injected, ReasonInjected, 0},
	{"aes-1x", Injected, ReasonInjected, 0},
	{"revision", Injected, ReasonInjected, 0},
	{"istio-1-5", Injected, ReasonInjected, 0},
	{"registry-port-digest", Injected, ReasonInjected, 0},
	{"opt-in-annotation", Injected, ReasonInjected, 0},
	{"opt-in-single-container", Injected, ReasonInjected, 0},
	{"opt-in-container-not-found", Skipped, ReasonContainerNotFound, 1},
	{"opt-out", Skipped, ReasonOptOut, 0},
	{"opt-out-after-injection", Injected, ReasonOptOut, 1},
	{"non-emissary", Skipped, ReasonNotEmissary, 0},
	{"already-injected-old-version", Injected, ReasonInjected, 0},
	{"already-injected-server-defaulted", UpToDate, ReasonUpToDate, 0},
	{"stale-status", Injected, ReasonInjected, 0},
	{"user-conflicts", Injected, ReasonInjected, 3},
	{"istio-injector-seed", Injected, ReasonInjected, 1},
	{"istio-injector-revision", Injected, ReasonInjected, 0},
	{"istio-injector-user-metadata", Injected, ReasonInjected, 4},
	{"emissary-guide-helm-values", Injected, ReasonInjected, 1},
	{"mode-annotation", Injected, ReasonInjected, 0},
	{"mode-annotation-invalid", Injected, ReasonInjected, 1},
	{"host-network-istio-injector", Skipped, ReasonHostNetwork, 1},
	{"host-network-sidecar", Injected, ReasonInjected, 1},
	{"native-sidecar", Injected, ReasonInjected, 0},
	{"switch-to-istio-injector", Injected, ReasonInjected, 0},
}

// inputNames lists the golden inputs found in testdata.
func inputNames(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		if !strings.HasSuffix(f, ".golden.yaml") && !strings.HasSuffix(f, ".config.yaml") {
			names = append(names, strings.TrimSuffix(filepath.Base(f), ".yaml"))
		}
	}
	slices.Sort(names)
	return names
}

func readDeployment(t testing.TB, name string) *appsv1.Deployment {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	d := &appsv1.Deployment{}
	if err := yaml.UnmarshalStrict(data, d); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

func configFor(t testing.TB, name string) *Config {
	t.Helper()
	path := filepath.Join("testdata", name+".config.yaml")
	if _, err := os.Stat(path); err != nil {
		path = ""
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func toYAML(t testing.TB, v any) []byte {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// roundTrip stores d as the API server would (JSON) and reads it back.
func roundTrip(t testing.TB, d *appsv1.Deployment) *appsv1.Deployment {
	t.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	out := &appsv1.Deployment{}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// resultText is the Result one field per line, unwrapped, for readable diffs.
func resultText(r Result) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "action: %s\nreason: %s\ncontainer: %s\nmessage: %s\n", r.Action, r.Reason, r.Container, r.Message)
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	return b.Bytes()
}

func TestGolden(t *testing.T) {
	var listed []string
	for _, tc := range goldenCases {
		listed = append(listed, tc.name)
	}
	slices.Sort(listed)
	if found := inputNames(t); !slices.Equal(found, listed) {
		t.Fatalf("testdata inputs %v do not match goldenCases %v", found, listed)
	}
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			d := readDeployment(t, tc.name)
			before := d.DeepCopy()
			res := Deployment(d, configFor(t, tc.name))

			if res.Action != tc.action || res.Reason != tc.reason || len(res.Warnings) != tc.warnings {
				t.Errorf("got %s/%s with %d warnings %q, want %s/%s with %d", res.Action, res.Reason, len(res.Warnings), res.Warnings, tc.action, tc.reason, tc.warnings)
			}
			if res.Message == "" {
				t.Error("empty message")
			}
			changed := !equality.Semantic.DeepEqual(before.Spec.Template, d.Spec.Template)
			if changed != res.Changed() {
				t.Errorf("template changed = %v but Action = %s", changed, res.Action)
			}
			if !res.Changed() && !reflect.DeepEqual(before, d) {
				t.Error("object modified although not Injected")
			}
			rest := d.DeepCopy()
			rest.Spec.Template = before.Spec.Template
			if !reflect.DeepEqual(rest, before) {
				t.Error("something outside spec.template was modified")
			}

			golden.Assert(t, filepath.Join("testdata", tc.name+".golden.yaml"), toYAML(t, d))
			golden.Assert(t, filepath.Join("testdata", tc.name+".result.golden.txt"), resultText(res))
		})
	}
}

// Injecting the output again, after the API server stored and returned it, changes nothing.
func TestIdempotent(t *testing.T) {
	for _, name := range inputNames(t) {
		t.Run(name, func(t *testing.T) {
			cfg := configFor(t, name)
			d := readDeployment(t, name)
			Deployment(d, cfg)
			first := toYAML(t, d)

			stored := roundTrip(t, d)
			res := Deployment(stored, cfg)
			if res.Changed() {
				t.Errorf("second pass: %s/%s: %s", res.Action, res.Reason, res.Message)
			}
			if second := toYAML(t, stored); !bytes.Equal(first, second) {
				t.Errorf("second pass changed the object:\n%s\nto\n%s", first, second)
			}

			// The same with the server's defaults filled in.
			stored.Spec.Template = *withServerDefaults(&stored.Spec.Template)
			if res := Deployment(stored, cfg); res.Changed() {
				t.Errorf("after server defaulting: %s/%s: %s", res.Action, res.Reason, res.Message)
			}
		})
	}
}

// A new injector version alone re-stamps nothing: no pod restarts on a webhook upgrade.
func TestNewVersionIsUpToDate(t *testing.T) {
	d := readDeployment(t, "seed-without-proxy")
	Deployment(d, DefaultConfig())
	defer func(v string) { Version = v }(Version)
	Version = "v9.9.9"
	if res := Deployment(d, DefaultConfig()); res.Action != UpToDate {
		t.Errorf("got %s: %s", res.Action, res.Message)
	}
}

// Every setting in the sidecar part of the config re-renders an injected Deployment.
func TestConfigChangeReRenders(t *testing.T) {
	injected := readDeployment(t, "seed-without-proxy")
	Deployment(injected, DefaultConfig())
	for _, yml := range []string{
		"istioVersion: 1.29.0",
		"hub: gcr.io/istio-release",
		"revision: canary",
		"caAddress: ca.example:15012",
		"trustDomain: example.org",
		"meshID: mesh1",
		"clusterID: east",
		"istioVersion: 1.21.6\njwtPolicy: first-party-jwt",
		"istioVersion: 1.5.10",
		"proxyRunAsUser: 1337",
		"proxyResources: {limits: {cpu: 500m}}",
		"imagePullPolicy: Always",
	} {
		t.Run(yml, func(t *testing.T) {
			cfg, err := ParseConfig([]byte("apiVersion: emissary-istio.io/v1alpha1\nkind: WebhookConfig\n" + yml))
			if err != nil {
				t.Fatal(err)
			}
			d := injected.DeepCopy()
			res := Deployment(d, cfg)
			if res.Action != Injected || !strings.HasPrefix(res.Message, "updated ") {
				t.Fatalf("got %s: %s", res.Action, res.Message)
			}
			if n := len(d.Spec.Template.Spec.Containers); n != 2 {
				t.Errorf("%d containers, want aes and one istio-proxy", n)
			}
			st, err := ParseStatus(&d.Spec.Template)
			if err != nil || st.ConfigHash != cfg.SidecarHash() {
				t.Errorf("status %+v, %v: want hash %s", st, err, cfg.SidecarHash())
			}
		})
	}
}

// Opting out after injection gives the user back exactly their own template, including an
// annotation value the injector had to overwrite.
func TestOptOutRestoresUserTemplate(t *testing.T) {
	for _, name := range []string{"user-conflicts", "emissary-3x", "helm-4x", "opt-in-annotation"} {
		t.Run(name, func(t *testing.T) {
			original := readDeployment(t, name)
			d := original.DeepCopy()
			if res := Deployment(d, DefaultConfig()); res.Action != Injected {
				t.Fatalf("first pass: %s", res.Message)
			}
			d = roundTrip(t, d)
			d.Annotations = map[string]string{AnnotationInject: "false"}
			res := Deployment(d, DefaultConfig())
			if res.Action != Injected || res.Reason != ReasonOptOut || !strings.HasPrefix(res.Message, "removed ") {
				t.Fatalf("opt-out: %s/%s: %s", res.Action, res.Reason, res.Message)
			}
			if !equality.Semantic.DeepEqual(d.Spec.Template, original.Spec.Template) {
				t.Errorf("template after opt-out:\n%s\nwant:\n%s", toYAML(t, d.Spec.Template), toYAML(t, original.Spec.Template))
			}
		})
	}
}
