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
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// Every testdata/<name>.yaml input must be listed here with the decision it must produce; the
// full output is in <name>.golden.yaml and the Result in <name>.result.golden.txt. A
// <name>.config.yaml beside the input replaces DefaultConfig(). An input is one Deployment,
// DaemonSet or Pod; inputs named after Emissary's own manifests say in a comment which
// upstream file and lines their shape mirrors.
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
	{"opt-out-after-injection", Injected, ReasonOptOut, 0},
	{"non-emissary", Skipped, ReasonNotEmissary, 0},
	{"already-injected-old-version", Injected, ReasonInjected, 0},
	{"already-injected-server-defaulted", UpToDate, ReasonUpToDate, 0},
	{"stale-status", Injected, ReasonInjected, 0},
	{"user-conflicts", Injected, ReasonInjected, 0},
	// Emissary's chart and manifests: the workloads that are the edge, and those that are not.
	{"chart-daemonset", Injected, ReasonInjected, 0},
	{"chart-bare-pod", Injected, ReasonInjected, 0},
	{"chart-mirror-emissary-ingress", Injected, ReasonInjected, 0},
	{"mirror-ambassador-edge-stack", Injected, ReasonInjected, 0},
	{"chart-renamed-image", Injected, ReasonInjected, 0},
	{"chart-unknown-image", Skipped, ReasonUnknownImage, 1},
	{"custom-emissary-images", Injected, ReasonInjected, 0},
	{"busyambassador-entrypoint", Injected, ReasonInjected, 0},
	{"apiext-3x", Skipped, string(RoleAPIExt), 0},
	{"apiext-4x", Skipped, string(RoleAPIExt), 0},
	{"consul-connector", Skipped, string(RoleConsulConnector), 0},
	{"agent-2x", Skipped, string(RoleAgent), 0},
	{"agent-3x", Skipped, string(RoleAgent), 0},
	{"aes-injector", Skipped, string(RoleHelper), 0},
	{"chart-host-network", Skipped, ReasonHostNetwork, 1},
	{"host-network-opt-in", Injected, ReasonInjected, 0},
	{"replicaset-pod", Skipped, ReasonOwnedPod, 0},
	{"bare-pod-old-config", Skipped, ReasonPodImmutable, 1},
	// Modes: istio-injector (Istio's own injector renders the proxy), the per-workload
	// override, switching, a hand-written Istio-injector setup completed; native sidecars.
	{"istio-injector-seed", Injected, ReasonInjected, 0},
	{"istio-injector-revision", Injected, ReasonInjected, 0},
	{"istio-injector-user-metadata", Injected, ReasonInjected, 0},
	{"emissary-guide-helm-values", Injected, ReasonInjected, 0},
	{"mode-annotation", Injected, ReasonInjected, 0},
	{"mode-annotation-invalid", Injected, ReasonInjected, 1},
	{"host-network-istio-injector", Skipped, ReasonHostNetwork, 1},
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

// readObject decodes the input name strictly as the kind it says it is.
func readObject(t testing.TB, name string) runtime.Object {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var meta metav1.TypeMeta
	if err := yaml.Unmarshal(data, &meta); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	objects := map[string]runtime.Object{KindDeployment: &appsv1.Deployment{}, KindDaemonSet: &appsv1.DaemonSet{}, KindPod: &corev1.Pod{}}
	obj, ok := objects[meta.Kind]
	if !ok {
		t.Fatalf("%s: kind %q is not a workload", name, meta.Kind)
	}
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return obj
}

func readWorkload(t testing.TB, name string) Workload { return NewWorkload(readObject(t, name)) }

func readDeployment(t testing.TB, name string) *appsv1.Deployment {
	t.Helper()
	d, ok := readObject(t, name).(*appsv1.Deployment)
	if !ok {
		t.Fatalf("%s is not a Deployment", name)
	}
	return d
}

// object is the API object a Workload wraps.
func object(w Workload) runtime.Object {
	switch o := w.(type) {
	case DeploymentWorkload:
		return o.Deployment
	case DaemonSetWorkload:
		return o.DaemonSet
	case PodWorkload:
		return o.Pod
	}
	panic("unknown workload")
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

// roundTrip stores w as the API server would (JSON) and reads it back.
func roundTrip(t testing.TB, w Workload) Workload {
	t.Helper()
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeWorkload(w.Kind(), b)
	if err != nil {
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
	for _, n := range r.Notices {
		fmt.Fprintf(&b, "notice: %s\n", n)
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
			before := readObject(t, tc.name)
			w := NewWorkload(before.DeepCopyObject())
			res := Apply(w, configFor(t, tc.name))

			if res.Action != tc.action || res.Reason != tc.reason || len(res.Warnings) != tc.warnings {
				t.Errorf("got %s/%s with %d warnings %q, want %s/%s with %d", res.Action, res.Reason, len(res.Warnings), res.Warnings, tc.action, tc.reason, tc.warnings)
			}
			if res.Message == "" {
				t.Error("empty message")
			}
			changed := !equality.Semantic.DeepEqual(NewWorkload(before).Template(), w.Template())
			if changed != res.Changed() {
				t.Errorf("template changed = %v but Action = %s", changed, res.Action)
			}
			if !res.Changed() && !reflect.DeepEqual(before, object(w)) {
				t.Error("object modified although not Injected")
			}
			rest := NewWorkload(before.DeepCopyObject())
			rest.SetTemplate(w.Template())
			if !reflect.DeepEqual(object(rest), object(w)) {
				t.Error("something outside the pod template was modified")
			}

			golden.Assert(t, filepath.Join("testdata", tc.name+".golden.yaml"), toYAML(t, w))
			golden.Assert(t, filepath.Join("testdata", tc.name+".result.golden.txt"), resultText(res))
		})
	}
}

// Injecting the output again, after the API server stored and returned it, changes nothing.
func TestIdempotent(t *testing.T) {
	for _, name := range inputNames(t) {
		t.Run(name, func(t *testing.T) {
			cfg := configFor(t, name)
			w := readWorkload(t, name)
			Apply(w, cfg)
			first := toYAML(t, w)

			stored := roundTrip(t, w)
			res := Apply(stored, cfg)
			if res.Changed() {
				t.Errorf("second pass: %s/%s: %s", res.Action, res.Reason, res.Message)
			}
			if second := toYAML(t, stored); !bytes.Equal(first, second) {
				t.Errorf("second pass changed the object:\n%s\nto\n%s", first, second)
			}

			// The same with the server's defaults filled in.
			stored.SetTemplate(withServerDefaults(stored.Template()))
			if res := Apply(stored, cfg); res.Changed() {
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
	for _, name := range []string{"user-conflicts", "emissary-3x", "helm-4x", "opt-in-annotation", "chart-daemonset", "chart-renamed-image"} {
		t.Run(name, func(t *testing.T) {
			original := readWorkload(t, name)
			w := NewWorkload(object(original).DeepCopyObject())
			if res := Apply(w, DefaultConfig()); res.Action != Injected {
				t.Fatalf("first pass: %s", res.Message)
			}
			w = roundTrip(t, w)
			w.SetAnnotations(map[string]string{AnnotationInject: "false"})
			res := Apply(w, DefaultConfig())
			if res.Action != Injected || res.Reason != ReasonOptOut || !strings.HasPrefix(res.Message, "removed ") {
				t.Fatalf("opt-out: %s/%s: %s", res.Action, res.Reason, res.Message)
			}
			if !equality.Semantic.DeepEqual(w.Template(), original.Template()) {
				t.Errorf("template after opt-out:\n%s\nwant:\n%s", toYAML(t, w.Template()), toYAML(t, original.Template()))
			}
		})
	}
}
