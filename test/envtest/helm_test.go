package envtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mapping"
)

// The chart, and how the tests install it: the release name and namespace that make its
// objects' names those of manifests/base.
const (
	chartName        = "emissary-istio-webhook"
	releaseName      = "emissary-istio-webhook"
	releaseNamespace = installNamespace
)

// allOptions turns on every optional piece of the chart.
var allOptions = []string{"--set", "tlsContext.enabled=true,tracing.enabled=true,strictMTLS.enabled=true," +
	"prometheus.enabled=true,prometheus.serviceMonitor.enabled=true,grafana.dashboard.enabled=true," +
	"networkPolicy.enabled=true,networkPolicy.metricsNamespaces={istio-system,monitoring}"}

// overrides sets every other new value away from its default: one replica (the PDB must not
// block), a securityContext without fixed IDs (as OpenShift's restricted SCC wants),
// maxUnavailable as a percentage, and the namespaceSelector labels the helm test's namespace
// must carry.
var overrides = []string{"--set-json", `replicaCount=1`,
	"--set-json", `podSecurityContext={"runAsUser":null,"runAsGroup":null,"fsGroup":null}`,
	"--set-json", `securityContext={"runAsUser":1000650000}`,
	"--set-json", `podDisruptionBudget={"enabled":true,"maxUnavailable":"50%"}`,
	"--set-json", `webhook.namespaceSelector={"matchLabels":{"team":"edge","env":"prod"}}`,
}

func chartDir() string { return filepath.Join(RepoRoot(), "charts", chartName) }

// helmPostRenderEnv, when set in the environment of the test binary, makes it a Helm
// post-renderer instead of a test run (TestMain): it points the chart's webhook configuration
// at the URL the variable holds, with no caBundle, as the harness does for the kustomize one.
const helmPostRenderEnv = "EMISSARY_ISTIO_TEST_HELM_POST_RENDER_URL"

// helmPostRender reads Helm's rendered manifests and writes them back with every
// MutatingWebhookConfiguration rewritten by PointAt.
func helmPostRender(url string, in io.Reader, out io.Writer) error {
	raw, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	for doc := range strings.SplitSeq(string(raw), "\n---") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return err
		}
		if meta.Kind == "MutatingWebhookConfiguration" {
			mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
			if err := yaml.UnmarshalStrict([]byte(doc), mwc); err != nil {
				return err
			}
			if err := PointAt(mwc, url, nil); err != nil {
				return err
			}
			b, err := yaml.Marshal(mwc)
			if err != nil {
				return err
			}
			doc = string(b)
		}
		if _, err := fmt.Fprintf(out, "---\n%s\n", strings.TrimPrefix(doc, "\n")); err != nil {
			return err
		}
	}
	return nil
}

// helmCmd is the real helm (`make helm` builds it from source) with its own configuration
// and cache directories, talking to e's control plane (nil: none). With postRenderURL the
// webhook configuration it installs calls that URL.
type helmCmd struct {
	t             *testing.T
	e             *Env
	home          string
	postRenderURL string
}

func newHelm(t *testing.T, e *Env) *helmCmd {
	t.Helper()
	return &helmCmd{t: t, e: e, home: t.TempDir()}
}

func (h *helmCmd) run(args ...string) (string, error) {
	h.t.Helper()
	if h.e != nil {
		args = append(args, "--kubeconfig", h.e.Kubeconfig)
	}
	var env []string
	if h.postRenderURL != "" && (args[0] == "install" || args[0] == "upgrade") {
		self, err := os.Executable()
		if err != nil {
			h.t.Fatal(err)
		}
		args = append(args, "--post-renderer", self)
		env = append(env, helmPostRenderEnv+"="+h.postRenderURL)
	}
	return Helm(h.home, env, args...)
}

func (h *helmCmd) must(args ...string) string {
	h.t.Helper()
	out, err := h.run(args...)
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// template renders the chart as the release the tests install, for the control plane's
// Kubernetes version.
func (h *helmCmd) template(args ...string) *manifests {
	h.t.Helper()
	out := h.must(append([]string{"template", releaseName, chartDir(), "--namespace", releaseNamespace,
		"--kube-version", kubeVersion(h.t)}, args...)...)
	return parseManifests(h.t, []byte(out))
}

// kubeVersion is the version of the control plane `make envtest` built (kubectl's).
func kubeVersion(t *testing.T) string {
	t.Helper()
	assets, err := AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(assets, "kubectl"), "version", "--client", "-o", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		ClientVersion struct{ GitVersion string } `json:"clientVersion"`
	}
	if err := json.Unmarshal(out, &v); err != nil || !strings.HasPrefix(v.ClientVersion.GitVersion, "v1.") {
		t.Fatalf("kubectl version %s: %v", out, err)
	}
	return v.ClientVersion.GitVersion
}

// TestHelmLint: `helm lint --strict` passes with the defaults, with every option and in
// self-signed mode; values.schema.json refuses bad values naming them; the chart refuses
// Kubernetes versions without matchConditions.
func TestHelmLint(t *testing.T) {
	h := newHelm(t, nil)
	for _, args := range [][]string{nil, allOptions, append(slices.Clone(allOptions), "--set", "tls.mode=self-signed"), append(slices.Clone(allOptions), overrides...)} {
		out := h.must(append([]string{"lint", chartDir(), "--strict", "--namespace", releaseNamespace, "--kube-version", kubeVersion(t)}, args...)...)
		if !strings.Contains(out, "0 chart(s) failed") {
			t.Errorf("helm lint %v:\n%s", args, out)
		}
	}
	for _, c := range []struct{ set, want string }{
		{"config.bogus=1", "bogus"},
		{"config.jwtPolicy=none", "jwtPolicy"},
		{"config.imagePullPolicy=Sometimes", "imagePullPolicy"},
		{"config.mapping.tlsContext=Not_A_Name", "tlsContext"},
		{"config.istioVersion=1.28.0@sha256:x", "istioVersion"},
		{"webhook.failurePolicy=Sometimes", "failurePolicy"},
		{"webhook.timeoutSeconds=60", "timeoutSeconds"},
		{"tls.mode=vault", "mode"},
		{"image.digest=latest", "digest"},
		{"replicas=3", "replicas"}, // replicaCount, misspelt
		{"replicaCount=0", "replicaCount"},
		{"podDisruptionBudget.maxUnavailable=0", "maxUnavailable"},
		{"podDisruptionBudget.maxUnavailable=0%", "maxUnavailable"},
		{"podDisruptionBudget.minAvailable=1", "minAvailable"}, // blocks drains: gone
		{"networkPolicy.metricsNamespaces={Not_A_Namespace}", "metricsNamespaces"},
		{"networkPolicy.bogus=1", "bogus"},
		{"podSecurityContext=root", "podSecurityContext"},
	} {
		_, err := h.run("template", releaseName, chartDir(), "--kube-version", kubeVersion(t), "--set", c.set)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--set %s: want an error naming %s, got %v", c.set, c.want, err)
		}
	}
	if _, err := h.run("template", releaseName, chartDir(), "--kube-version", "v1.29.0"); err == nil || !strings.Contains(err.Error(), "kubeVersion") {
		t.Errorf("Kubernetes 1.29 (no matchConditions): want a kubeVersion error, got %v", err)
	}
}

// TestHelmConfigValues: values.schema.json describes exactly the keys of inject.Config (a new
// configuration key needs a schema entry, nothing else: the template renders the config map
// as it is), and the configuration reference's complete example (docs/configuration.md),
// given as the chart's config value, is what the webhook reads from the ConfigMap.
func TestHelmConfigValues(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir(), "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema jsonSchema
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	var inSchema []string
	schema.Properties["config"].keys("", &inSchema)
	want := slices.DeleteFunc(configKeys(reflect.TypeFor[inject.Config](), ""), func(k string) bool { return k == "apiVersion" || k == "kind" })
	for _, key := range want {
		if !slices.Contains(inSchema, key) {
			t.Errorf("configuration key %s is not in values.schema.json's config (the chart would refuse it)", key)
		}
	}
	for _, key := range inSchema {
		if !slices.ContainsFunc(want, func(k string) bool {
			return key == k || strings.HasPrefix(key, k+".") || strings.HasPrefix(k, key+".")
		}) {
			t.Errorf("values.schema.json's config has %s, which the webhook does not know", key)
		}
	}

	example := configExample(t)
	values := "config:\n"
	for line := range strings.SplitSeq(example, "\n") {
		if line != "" && !strings.HasPrefix(line, "apiVersion:") && !strings.HasPrefix(line, "kind:") {
			values += "  " + line + "\n"
		}
	}
	file := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(file, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	newHelm(t, nil).template("-f", file).get(t, "ConfigMap", releaseName+"-config", &cm)
	got, err := inject.ParseConfig([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("the chart's rendering of the documented example does not parse: %v\n%s", err, cm.Data["config.yaml"])
	}
	wantCfg, err := inject.ParseConfig([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := mustJSON(t, got), mustJSON(t, wantCfg); a != b {
		t.Errorf("the chart renders the documented example as\n%s\nwant\n%s", a, b)
	}
}

// jsonSchema is the part of JSON Schema values.schema.json uses to nest keys.
type jsonSchema struct {
	Properties map[string]jsonSchema `json:"properties"`
}

// keys lists the dotted property paths under s.
func (s jsonSchema) keys(prefix string, into *[]string) {
	for name, p := range s.Properties {
		*into = append(*into, prefix+name)
		p.keys(prefix+name+".", into)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestHelmChartMatchesKustomize: the chart with the defaults installs what manifests/base
// installs, and each optional value adds what the matching component adds: the same objects
// (kind, namespace, name) with the same content. What may differ, by design: the chart's
// labels are a superset (Helm's standard ones), its selectors add the release's instance
// label, its pods carry a checksum of the configuration (kustomize puts a hash in the
// ConfigMap's name instead), the TLSContext and the PeerAuthentication are kept on uninstall,
// the dashboard ConfigMap is named per release, and it does not create its own Namespace
// (`helm install` does not own namespaces). The helm test's objects (hooks) have no
// kustomize counterpart.
func TestHelmChartMatchesKustomize(t *testing.T) {
	h := newHelm(t, nil)
	cases := []struct {
		name       string
		values     []string
		components []string
	}{
		{"defaults", nil, nil},
		{"self-signed", []string{"--set", "tls.mode=self-signed"}, []string{"self-signed"}},
		{"tls-context", []string{"--set", "tlsContext.enabled=true"}, []string{"tls-context"}},
		{"legacy-istio-1.4", []string{"--set", "tlsContext.enabled=true,tlsContext.legacyIstio14=true"}, []string{"legacy-istio-1.4"}},
		{"tracing", []string{"--set", "tracing.enabled=true"}, []string{"tracing"}},
		{"strict-mtls", []string{"--set", "strictMTLS.enabled=true"}, []string{"strict-mtls"}},
		{"prometheus", []string{"--set", "prometheus.enabled=true"}, []string{"prometheus"}},
		{"grafana-dashboard", []string{"--set", "grafana.dashboard.enabled=true"}, []string{"grafana-dashboard"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			chart := h.template(c.values...)
			kust := kustomize(t, c.components, "")
			chartObjs, kustObjs := byIdentity(t, chart, true), byIdentity(t, kust, false)
			delete(kustObjs, "Namespace//"+installNamespace)
			for id := range kustObjs {
				if _, ok := chartObjs[id]; !ok {
					t.Errorf("the chart has no %s", id)
				}
			}
			for id, got := range chartObjs {
				want, ok := kustObjs[id]
				if !ok {
					t.Errorf("the chart has %s, kustomize has not", id)
					continue
				}
				compareObjects(t, id, got, want)
			}
		})
	}
}

// byIdentity indexes objects by kind/namespace/name, the generated configuration ConfigMap
// under its name without kustomize's hash.
func byIdentity(t *testing.T, m *manifests, fromChart bool) map[string]*unstructured.Unstructured {
	t.Helper()
	out := map[string]*unstructured.Unstructured{}
	for _, u := range m.objects {
		if _, hook := u.GetAnnotations()["helm.sh/hook"]; hook {
			continue // the helm test's objects (TestHelmChartEdges)
		}
		u = u.DeepCopy()
		if !fromChart && u.GetKind() == "Deployment" {
			// The generated ConfigMap's hashed name, where the Deployment mounts it.
			vols, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "volumes")
			for _, v := range vols {
				if cm, ok := v.(map[string]any)["configMap"].(map[string]any); ok && strings.HasPrefix(cm["name"].(string), webhookName+"-config-") {
					cm["name"] = webhookName + "-config"
				}
			}
			_ = unstructured.SetNestedSlice(u.Object, vols, "spec", "template", "spec", "volumes")
		}
		if name := u.GetName(); u.GetKind() == "ConfigMap" && strings.HasPrefix(name, webhookName+"-config-") {
			u.SetName(webhookName + "-config")
		}
		// The chart names the dashboard ConfigMap and its file per release
		// (TestHelmChartEdges); the kustomize component's name is fixed.
		if fromChart && u.GetKind() == "ConfigMap" && u.GetName() == releaseName+"-dashboard" {
			data, _, _ := unstructured.NestedStringMap(u.Object, "data")
			_ = unstructured.SetNestedStringMap(u.Object, map[string]string{filepath.Base(dashboardFile): data[releaseName+"-dashboard.json"]}, "data")
			u.SetName("emissary-istio-dashboard")
		}
		id := u.GetKind() + "/" + u.GetNamespace() + "/" + u.GetName()
		if _, dup := out[id]; dup {
			t.Fatalf("%s twice", id)
		}
		out[id] = u
	}
	return out
}

// compareObjects compares a chart object with kustomize's, after taking out and checking
// separately what differs by design (see TestHelmChartMatchesKustomize).
func compareObjects(t *testing.T, id string, chart, kust *unstructured.Unstructured) {
	t.Helper()
	for k, v := range kust.GetLabels() {
		if chart.GetLabels()[k] != v {
			t.Errorf("%s: the chart's labels %v lack kustomize's %s=%s", id, chart.GetLabels(), k, v)
		}
	}
	chart, kust = normalize(t, id, chart), normalize(t, id, kust)
	if !reflect.DeepEqual(chart.Object, kust.Object) {
		t.Errorf("%s differs\n--- chart:\n%s\n--- kustomize:\n%s", id, toYAML(t, chart), toYAML(t, kust))
	}
}

// normalize drops labels, selectors and the chart's own annotations (after checking that
// selectors still select the pods), and parses ConfigMap files, so that comments and key
// order do not count.
func normalize(t *testing.T, id string, u *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	u = u.DeepCopy()
	o := u.Object
	unstructured.RemoveNestedField(o, "metadata", "labels")
	ann := u.GetAnnotations()
	delete(ann, "helm.sh/resource-policy")
	if len(ann) == 0 {
		unstructured.RemoveNestedField(o, "metadata", "annotations")
	}

	podLabels, _, _ := unstructured.NestedStringMap(o, "spec", "template", "metadata", "labels")
	selected := func(path ...string) {
		sel, found, _ := unstructured.NestedStringMap(o, path...)
		if found && podLabels != nil && !selects(sel, podLabels) {
			t.Errorf("%s: %s %v does not select the pods %v", id, strings.Join(path, "."), sel, podLabels)
		}
		unstructured.RemoveNestedField(o, path...)
	}
	switch u.GetKind() {
	case "Deployment":
		selected("spec", "selector", "matchLabels")
		terms, _, _ := unstructured.NestedSlice(o, "spec", "template", "spec", "affinity", "podAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution")
		for _, term := range terms {
			ls := term.(map[string]any)["podAffinityTerm"].(map[string]any)
			if sel, ok := ls["labelSelector"].(map[string]any)["matchLabels"].(map[string]any); !ok || !selects(toStringMap(sel), podLabels) {
				t.Errorf("%s: the anti-affinity term %v does not select the pods", id, ls)
			}
			delete(ls, "labelSelector")
		}
		_ = unstructured.SetNestedSlice(o, terms, "spec", "template", "spec", "affinity", "podAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution")
		unstructured.RemoveNestedField(o, "spec", "template", "metadata", "labels")
		podAnn, _, _ := unstructured.NestedStringMap(o, "spec", "template", "metadata", "annotations")
		delete(podAnn, "checksum/config")
		if len(podAnn) == 0 {
			unstructured.RemoveNestedField(o, "spec", "template", "metadata")
		} else {
			_ = unstructured.SetNestedStringMap(o, podAnn, "spec", "template", "metadata", "annotations")
		}
	case "Service":
		unstructured.RemoveNestedField(o, "spec", "selector") // checked by TestManifestsRender and below
	case "PodDisruptionBudget":
		unstructured.RemoveNestedField(o, "spec", "selector")
	case "ConfigMap":
		data, _, _ := unstructured.NestedStringMap(o, "data")
		parsed := map[string]any{}
		for file, content := range data {
			var v any
			if err := yaml.Unmarshal([]byte(content), &v); err != nil {
				t.Fatalf("%s: %s: %v", id, file, err)
			}
			parsed[file] = v
		}
		o["data"] = parsed
	}
	return u
}

func toStringMap(m map[string]any) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k], _ = v.(string)
	}
	return out
}

// TestHelmChart runs the real helm against a control plane of its own with cert-manager's
// real CRDs, the Emissary and Istio test CRDs and the prometheus-operator's ServiceMonitor
// CRD: every rendering passes the API server's strict validation, and docs/install.md's install
// commands give a webhook that injects an Emissary Deployment applied with kubectl, that an
// upgrade keeps working (the caBundle cert-manager's CA injector filled survives it), and
// that an uninstall removes cleanly. The chart's webhook configuration is pointed at the
// in-process server (a post-renderer does what the harness does to the kustomize one), whose
// configuration is the one the chart renders.
func TestHelmChart(t *testing.T) {
	h := newHelm(t, nil)
	var cm corev1.ConfigMap
	h.template().get(t, "ConfigMap", releaseName+"-config", &cm)
	cfg, err := inject.ParseConfig([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("the chart's default configuration: %v", err)
	}
	e, err := Start(Options{Config: cfg, CRDDirs: []string{
		filepath.Join(RepoRoot(), "test", "envtest", "crds"),
		certManagerCRDs(t),
		filepath.Join(RepoRoot(), "test", "envtest", "testdata", "crds"),
		serviceMonitorCRD(t),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	// The chart creates the configuration the harness registered under the same name.
	if _, _, err := e.Kubectl(nil, "delete", "mutatingwebhookconfiguration", webhookName); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"ambassador", "istio-system"} {
		if _, _, err := e.Kubectl(nil, "create", "namespace", ns); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("every rendering passes strict server-side validation", func(t *testing.T) { testHelmTemplatesApply(t, e) })
	t.Run("install, inject, upgrade, uninstall", func(t *testing.T) { testHelmLifecycle(t, e, cfg) })
}

// serviceMonitorCRD is a directory with the prometheus-operator's ServiceMonitor CRD, from
// its Go module (not a dependency of this one: downloaded from the module proxy, pinned).
func serviceMonitorCRD(t *testing.T) string {
	t.Helper()
	const module = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
	cmd := exec.Command("go", "mod", "download", "-json", module)
	cmd.Dir = RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v %s", module, err, out)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s: %v %s", module, err, out)
	}
	crd := mustRead(t, filepath.Join(mod.Dir, "example", "prometheus-operator-crd", "monitoring.coreos.com_servicemonitors.yaml"))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "servicemonitors.yaml"), []byte(crd), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// testHelmTemplatesApply: `helm template` with the defaults, with every option, in both
// certificate modes, applied with `kubectl apply --server-side --dry-run=server
// --validate=strict` into a namespace that warns at Pod Security restricted: no error, no
// warning.
func testHelmTemplatesApply(t *testing.T, e *Env) {
	const ns = "helm-dry-run"
	if _, _, err := e.Kubectl(nil, "create", "namespace", ns); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Kubectl(nil, "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted"); err != nil {
		t.Fatal(err)
	}
	h := newHelm(t, e)
	for _, values := range [][]string{
		nil,
		allOptions,
		append(slices.Clone(allOptions), "--set", "tls.mode=self-signed"),
		{"--set", "tls.certManager.issuerRef.kind=ClusterIssuer,tls.certManager.issuerRef.name=my-ca"},
		append(append(slices.Clone(allOptions), "--set", "tls.mode=self-signed"), overrides...),
	} {
		rendered := h.must(append([]string{"template", releaseName, chartDir(), "--namespace", ns, "--kube-version", kubeVersion(t)}, values...)...)
		out, stderr, err := e.Kubectl([]byte(rendered), "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-")
		if err != nil {
			t.Fatalf("%v: %v", values, err)
		}
		if strings.Contains(stderr, "Warning") {
			t.Errorf("%v: kubectl printed warnings:\n%s", values, stderr)
		}
		t.Logf("%v: %d objects validated", values, strings.Count(out, "serverside-applied"))
	}
}

// testHelmLifecycle installs the chart with the documented commands, then upgrades and
// uninstalls it.
func testHelmLifecycle(t *testing.T, e *Env, cfg *inject.Config) {
	ctx := context.Background()
	h := newHelm(t, e)
	h.postRenderURL = e.WebhookURL
	installArgs := runDocumentedHelmInstall(t, e, h)

	// What helm installed: the webhook configuration, by URL, with no caBundle yet, asking
	// cert-manager for the serving Certificate's CA.
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := e.Client.Get(ctx, client.ObjectKey{Name: webhookName}, mwc); err != nil {
		t.Fatal(err)
	}
	var cert cmapi.Certificate
	out, _, err := e.Kubectl(nil, "get", "certificates.cert-manager.io", servingCertificate, "-n", releaseNamespace, "-o", "json")
	if err != nil {
		t.Fatalf("the chart's serving Certificate: %v", err)
	}
	if err := json.Unmarshal([]byte(out), &cert); err != nil {
		t.Fatal(err)
	}
	if got := mwc.Annotations[cmapi.WantInjectAnnotation]; got != releaseNamespace+"/"+servingCertificate {
		t.Fatalf("inject-ca-from = %q", got)
	}

	// cert-manager's part: its issuing controllers do not run here, so the test writes the
	// Certificate's Secret as they would; its real CA injector fills the caBundle.
	bundle := serveNewBundle(t, e)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: cert.Spec.SecretName, Namespace: releaseNamespace,
			Annotations: map[string]string{cmapi.CertificateNameKey: cert.Name}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": bundle.CertPEM, "tls.key": bundle.KeyPEM, "ca.crt": bundle.CACert},
	}
	if err := e.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	stopInjector := runCAInjector(t, e)
	caBundles := func() [][]byte {
		got := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := e.Client.Get(ctx, client.ObjectKey{Name: webhookName}, got); err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for _, w := range got.Webhooks {
			out = append(out, w.ClientConfig.CABundle)
		}
		return out
	}
	filled := func() (string, bool) {
		b := caBundles()
		return fmt.Sprintf("%d caBundles", len(b)), len(b) == 3 && !slices.ContainsFunc(b, func(ca []byte) bool { return !bytes.Equal(ca, bundle.CACert) })
	}
	eventually(t, 30*time.Second, filled)
	stopInjector() // from here on, nothing would put a lost caBundle back
	if err := e.WaitForWebhook(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	applyEmissary(t, e, "helm-installed", cfg)
	t.Run("helm test", func(t *testing.T) { testHelmTest(t, e, h) })

	// The chart does not render caBundle (the release's manifest has none): helm's
	// three-way merge must leave the live one alone on upgrade.
	released := parseManifests(t, []byte(h.must("get", "manifest", releaseName, "--namespace", releaseNamespace)))
	for _, w := range released.get(t, "MutatingWebhookConfiguration", webhookName, nil).Object["webhooks"].([]any) {
		if _, set := w.(map[string]any)["clientConfig"].(map[string]any)["caBundle"]; set {
			t.Fatal("the release's manifest sets caBundle: the upgrade checks would show nothing")
		}
	}
	upgrade := func(extra ...string) {
		t.Helper()
		h.must(append(append([]string{"upgrade"}, installArgs[1:]...), extra...)...)
	}
	upgrade()
	if msg, ok := filled(); !ok {
		t.Fatalf("helm upgrade with the same values lost the caBundle: %s", msg)
	}
	// A real change goes through, and still keeps the caBundle.
	upgrade("--set", "webhook.timeoutSeconds=7,tlsContext.enabled=true,strictMTLS.enabled=true")
	if err := e.Client.Get(ctx, client.ObjectKey{Name: webhookName}, mwc); err != nil {
		t.Fatal(err)
	}
	if to := mwc.Webhooks[0].TimeoutSeconds; to == nil || *to != 7 {
		t.Fatalf("helm upgrade --set webhook.timeoutSeconds=7 left timeoutSeconds %v", to)
	}
	if msg, ok := filled(); !ok {
		t.Fatalf("helm upgrade with a changed value lost the caBundle: %s", msg)
	}
	if err := e.WaitForWebhook(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	applyEmissary(t, e, "helm-upgraded", cfg)

	// The control: an upgrade that replaces objects instead of merging (--force) does lose
	// the caBundle, so the checks above can fail. (docs/operations.md says not to use it.)
	upgrade("--force", "--set", "webhook.timeoutSeconds=7,tlsContext.enabled=true,strictMTLS.enabled=true")
	if _, ok := filled(); ok {
		t.Error("helm upgrade --force kept the caBundle: the upgrade checks above prove nothing")
	}

	// STRICT mTLS switched off: the PeerAuthentication stays (deleting it would return the
	// mesh to PERMISSIVE); the release no longer has it.
	peerAuthentication := func() error {
		_, _, err := e.Kubectl(nil, "get", "peerauthentications.security.istio.io", "default", "-n", "istio-system")
		return err
	}
	if err := peerAuthentication(); err != nil {
		t.Fatalf("strictMTLS.enabled=true installed no PeerAuthentication: %v", err)
	}
	upgrade("--set", "webhook.timeoutSeconds=7,tlsContext.enabled=true,strictMTLS.enabled=false")
	if err := peerAuthentication(); err != nil {
		t.Errorf("helm upgrade with strictMTLS.enabled=false deleted the PeerAuthentication: %v", err)
	}
	if parseManifests(t, []byte(h.must("get", "manifest", releaseName, "--namespace", releaseNamespace))).has("PeerAuthentication", "default") {
		t.Error("the release still has the PeerAuthentication after strictMTLS.enabled=false")
	}
	// Turned on again, the same release takes it back.
	upgrade("--set", "webhook.timeoutSeconds=7,tlsContext.enabled=true,strictMTLS.enabled=true")

	// Uninstall: the webhook configuration goes (Emissary applies without it, unchanged);
	// the TLSContext stays for the Mappings that name it.
	h.must("uninstall", releaseName, "--namespace", releaseNamespace)
	eventually(t, 30*time.Second, func() (string, bool) {
		err := e.Client.Get(ctx, client.ObjectKey{Name: webhookName}, &admissionregistrationv1.MutatingWebhookConfiguration{})
		return fmt.Sprintf("the webhook configuration is still there (%v)", err), err != nil
	})
	if _, _, err := e.Kubectl(nil, "get", "tlscontexts.getambassador.io", mapping.DefaultTLSContext, "-n", "ambassador"); err != nil {
		t.Errorf("helm uninstall removed the TLSContext: %v", err)
	}
	if err := peerAuthentication(); err != nil {
		t.Errorf("helm uninstall removed the PeerAuthentication (the mesh is PERMISSIVE again): %v", err)
	}
	eventually(t, 30*time.Second, func() (string, bool) {
		probe := ProbeDeployment()
		err := e.Client.Create(ctx, probe, client.DryRunAll)
		return fmt.Sprintf("an Emissary Deployment is not stored unchanged without the webhook: %v", err),
			err == nil && len(probe.Spec.Template.Spec.Containers) == 1
	})
}

// runDocumentedHelmInstall runs the commands of the first sh block of docs/install.md's
// "Install with Helm" (kubectl and helm, against e) and returns the helm install arguments.
func runDocumentedHelmInstall(t *testing.T, e *Env, h *helmCmd) []string {
	t.Helper()
	section := docSection(t, installDoc, "Install with Helm")
	_, block, found := strings.Cut(section, "```sh\n")
	if !found {
		t.Fatal("the Helm install section has no sh block")
	}
	block, _, _ = strings.Cut(block, "```")
	var helmArgs []string
	var commands int
	for line := range strings.SplitSeq(block, "\n") {
		line, _, _ = strings.Cut(line, "#")
		args := strings.Fields(line)
		if len(args) == 0 {
			continue
		}
		commands++
		switch args[0] {
		case "kubectl":
			if _, _, err := e.Kubectl(nil, args[1:]...); err != nil {
				t.Fatalf("%s: %s: %v", installDoc, line, err)
			}
		case "helm":
			helmArgs = args[1:]
			// The chart's path is relative to the repository's root.
			for i, a := range helmArgs {
				if a == "charts/"+chartName {
					helmArgs[i] = chartDir()
				}
			}
			h.must(helmArgs...)
		default:
			t.Fatalf("%s: %q is not a kubectl or helm command", installDoc, line)
		}
	}
	if commands != 3 || len(helmArgs) == 0 || helmArgs[0] != "install" {
		t.Fatalf("%s's Helm install is %d commands ending with helm %v; want three, the last helm install", installDoc, commands, helmArgs)
	}
	return helmArgs
}

// applyEmissary applies the seed's Emissary Deployment with kubectl under name and checks it
// was stored injected with cfg's sidecar.
func applyEmissary(t *testing.T, e *Env, name string, cfg *inject.Config) {
	t.Helper()
	seed := strings.Replace(mustRead(t, testdata("emissary-deployment.yaml")), "  name: ambassador\n", "  name: "+name+"\n", 1)
	if _, _, err := e.Kubectl([]byte(seed), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	d := &appsv1.Deployment{}
	if err := e.Client.Get(context.Background(), client.ObjectKey{Namespace: "ambassador", Name: name}, d); err != nil {
		t.Fatal(err)
	}
	assertInjected(t, d, cfg.Image())
}

// matchRegexps are the regular expressions of the matchConditions of mwc's workload and Pod
// webhooks: image ones (tested on c.image) and name ones (on app.kubernetes.io/name).
func matchRegexps(t *testing.T, mwc *admissionregistrationv1.MutatingWebhookConfiguration) (images, names []string) {
	t.Helper()
	call := regexp.MustCompile(`(c\.image|\['app\.kubernetes\.io/name'\])\.matches\('([^']*)'\)`)
	for _, w := range mwc.Webhooks {
		for _, mc := range w.MatchConditions {
			for _, m := range call.FindAllStringSubmatch(mc.Expression, -1) {
				if m[1] == "c.image" {
					images = append(images, m[2])
				} else {
					names = append(names, m[2])
				}
			}
		}
	}
	if len(images) != 2 || len(names) != 3 {
		t.Fatalf("found %d image and %d name patterns in the matchConditions, want 2 and 3", len(images), len(names))
	}
	return images, names
}

// TestEmissaryImagesInMatchConditions: the webhook configuration sends the webhook exactly
// the images and names the injector recognises (pkg/inject ImageRegexp and NameRegexp): the
// kustomize one for the default emissaryImages, the chart's for config.emissaryImages,
// whatever they are; the API server accepts the CEL of each.
func TestEmissaryImagesInMatchConditions(t *testing.T) {
	check := func(t *testing.T, mwc *admissionregistrationv1.MutatingWebhookConfiguration, patterns []string) {
		t.Helper()
		images, names := matchRegexps(t, mwc)
		for _, got := range images {
			if want := inject.ImageRegexp(patterns); got != want {
				t.Errorf("image pattern %q, want %q (emissaryImages %q)", got, want, patterns)
			}
		}
		for _, got := range names {
			if want := inject.NameRegexp(patterns); got != want {
				t.Errorf("name pattern %q, want %q (emissaryImages %q)", got, want, patterns)
			}
		}
		// The API server compiles the CEL when the configuration is created (a dry run).
		mwc = mwc.DeepCopy()
		mwc.ResourceVersion = ""
		if err := PointAt(mwc, env.WebhookURL, env.CABundle); err != nil {
			t.Fatal(err)
		}
		mwc.Name = "cel-check"
		if err := env.Client.Create(context.Background(), mwc, client.DryRunAll); err != nil {
			t.Errorf("the API server refuses the matchConditions for emissaryImages %q: %v", patterns, err)
		}
	}
	base := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict([]byte(mustRead(t, filepath.Join(RepoRoot(), "manifests", "base", "mutatingwebhookconfiguration.yaml"))), base); err != nil {
		t.Fatal(err)
	}
	check(t, base, inject.DefaultConfig().EmissaryImages)

	h := newHelm(t, nil)
	for _, patterns := range [][]string{
		inject.DefaultEmissaryImages,
		{"emissary", "mirror.example/platform/edge-*", "gw?"},
		{},
	} {
		values := filepath.Join(t.TempDir(), "values.yaml")
		b, err := yaml.Marshal(map[string]any{"config": map[string]any{"emissaryImages": patterns}})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(values, b, 0o644); err != nil {
			t.Fatal(err)
		}
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		h.template("-f", values).get(t, "MutatingWebhookConfiguration", releaseName, &mwc)
		check(t, &mwc, patterns)
	}
}
