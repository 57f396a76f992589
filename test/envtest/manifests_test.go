package envtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mapping"
)

// manifests is the output of `kubectl kustomize`, as text and as objects.
type manifests struct {
	yaml    []byte
	objects []*unstructured.Unstructured
}

// kustomize builds manifests/base with the given components (names under
// manifests/components) and extra kustomization text, with the real kubectl's kustomize,
// through a throwaway overlay: what an operator's own kustomization does.
func kustomize(t *testing.T, components []string, extra string) *manifests {
	t.Helper()
	return kustomizeWith(t, components, extra, nil)
}

// kustomizeWith is kustomize with more files in the overlay directory (name → content).
func kustomizeWith(t *testing.T, components []string, extra string, files map[string]string) *manifests {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// kustomize refuses absolute paths to other kustomizations.
	rel := func(path string) string {
		r, err := filepath.Rel(dir, filepath.Join(RepoRoot(), "manifests", path))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- " + rel("base") + "\n"
	if len(components) > 0 {
		k += "components:\n"
		for _, c := range components {
			k += "- " + rel(filepath.Join("components", c)) + "\n"
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	return kustomizeDir(t, dir)
}

// kustomizeDir runs `kubectl kustomize dir`.
func kustomizeDir(t *testing.T, dir string) *manifests {
	t.Helper()
	assets, err := AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", dir)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl kustomize %s: %v: %s", dir, err, errOut.String())
	}
	return parseManifests(t, out.Bytes())
}

// parseManifests splits a YAML stream (kustomize's, helm's) into objects.
func parseManifests(t *testing.T, stream []byte) *manifests {
	t.Helper()
	objects, err := ParseObjects(stream)
	if err != nil {
		t.Fatal(err)
	}
	return &manifests{yaml: stream, objects: objects}
}

// get returns the one object of kind and name, decoded into into (nil: not decoded).
func (m *manifests) get(t *testing.T, kind, name string, into runtime.Object) *unstructured.Unstructured {
	t.Helper()
	for _, u := range m.objects {
		if u.GetKind() == kind && u.GetName() == name {
			if into != nil {
				if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, into, true); err != nil {
					t.Fatalf("%s %s: %v", kind, name, err)
				}
			}
			return u
		}
	}
	t.Fatalf("no %s %s in the kustomize output", kind, name)
	return nil
}

// has reports whether an object of kind (and name, unless empty) is in the output.
func (m *manifests) has(kind, name string) bool {
	return slices.ContainsFunc(m.objects, func(u *unstructured.Unstructured) bool {
		return u.GetKind() == kind && (name == "" || u.GetName() == name)
	})
}

// only returns the objects keep accepts, as YAML for kubectl.
func (m *manifests) only(t *testing.T, keep func(*unstructured.Unstructured) bool) []byte {
	t.Helper()
	var out bytes.Buffer
	for _, u := range m.objects {
		if !keep(u) {
			continue
		}
		out.WriteString("---\n")
		out.Write(toYAML(t, u))
	}
	return out.Bytes()
}

func toYAML(t *testing.T, u *unstructured.Unstructured) []byte {
	t.Helper()
	b, err := yaml.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The names that tie the install together, as the webhook configuration spells them.
const (
	installNamespace   = "emissary-istio-system"
	webhookName        = "emissary-istio-webhook"
	servingCertificate = "emissary-istio-webhook-serving"
)

// TestManifestsRender checks, on the real kustomize output of every supported combination,
// that the pieces refer to each other correctly (a wrong name anywhere here is a webhook the
// API server cannot call) and that each component carries exactly the seed's settings.
func TestManifestsRender(t *testing.T) {
	cases := []struct {
		name       string
		components []string
		extra      string
		files      map[string]string
		check      func(t *testing.T, m *manifests)
	}{
		{"base", nil, "", nil, checkBase},
		{"an overlay that pins the image and replaces the configuration, as docs/operations.md shows", nil, docsOverlay,
			map[string]string{"config.yaml": "apiVersion: emissary-istio.io/v1alpha1\nkind: WebhookConfig\nistioVersion: \"1.99.0\"\n"},
			func(t *testing.T, m *manifests) {
				var deploy appsv1.Deployment
				m.get(t, "Deployment", webhookName, &deploy)
				if img := deploy.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/emissary-istio/emissary-istio-webhook:v9.9.9" {
					t.Errorf("image = %q", img)
				}
				var cm corev1.ConfigMap
				m.get(t, "ConfigMap", volumeNamed(deploy.Spec.Template.Spec, "config").ConfigMap.Name, &cm)
				cfg, err := inject.ParseConfig([]byte(cm.Data["config.yaml"]))
				if err != nil || cfg.IstioVersion != "1.99.0" {
					t.Errorf("the pods get istioVersion %v (%v), want the overlay's 1.99.0", cfg, err)
				}
				if base := kustomize(t, nil, ""); base.has("ConfigMap", cm.Name) {
					t.Error("a new configuration must give the ConfigMap a new name, so the pods roll")
				}
			}},
		{"self-signed", []string{"self-signed"}, "", nil, checkSelfSigned},
		{"tls-context", []string{"tls-context"}, "", nil, func(t *testing.T, m *manifests) {
			checkTLSContext(t, m, "ambassador", map[string]any{"secret": "istio-certs", "alpn_protocols": "istio"})
		}},
		{"tls-context in another namespace, as its kustomization.yaml shows", []string{"tls-context"},
			"patches:\n- target: {kind: TLSContext, name: istio-upstream}\n  patch: '[{\"op\": \"replace\", \"path\": \"/metadata/namespace\", \"value\": \"emissary\"}]'\n", nil,
			func(t *testing.T, m *manifests) {
				checkTLSContext(t, m, "emissary", map[string]any{"secret": "istio-certs", "alpn_protocols": "istio"})
				if ns := m.get(t, "Deployment", webhookName, nil).GetNamespace(); ns != installNamespace {
					t.Errorf("the patch moved the webhook to %q", ns)
				}
			}},
		{"legacy-istio-1.4", []string{"legacy-istio-1.4"}, "", nil, func(t *testing.T, m *manifests) {
			checkTLSContext(t, m, "ambassador", map[string]any{"secret": "istio.default", "secret_namespacing": false, "alpn_protocols": "istio"})
		}},
		{"tracing", []string{"tracing"}, "", nil, checkTracing},
		{"strict-mtls", []string{"strict-mtls"}, "", nil, checkStrictMTLS},
		{"prometheus", []string{"prometheus"}, "", nil, checkPrometheus},
		{"grafana-dashboard", []string{"grafana-dashboard"}, "", nil, checkGrafanaDashboard},
		{"every component but the legacy one", []string{"self-signed", "tls-context", "tracing", "strict-mtls", "prometheus"}, "", nil,
			func(t *testing.T, m *manifests) {
				checkSelfSigned(t, m)
				checkPrometheus(t, m)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, kustomizeWith(t, tc.components, tc.extra, tc.files))
		})
	}
}

// docsOverlay is docs/operations.md's example of pinning the image and replacing the
// configuration in an overlay ("Upgrading: one way for every change").
const docsOverlay = `images:
- name: ghcr.io/emissary-istio/emissary-istio-webhook
  newTag: v9.9.9
configMapGenerator:
- name: emissary-istio-webhook-config
  namespace: emissary-istio-system
  behavior: replace
  files:
  - config.yaml
`

func checkBase(t *testing.T, m *manifests) {
	var (
		mwc     admissionregistrationv1.MutatingWebhookConfiguration
		svc     corev1.Service
		deploy  appsv1.Deployment
		role    rbacv1.ClusterRole
		binding rbacv1.ClusterRoleBinding
	)
	m.get(t, "MutatingWebhookConfiguration", webhookName, &mwc)
	m.get(t, "Service", webhookName, &svc)
	m.get(t, "Deployment", webhookName, &deploy)
	m.get(t, "ClusterRole", webhookName, &role)
	m.get(t, "ClusterRoleBinding", webhookName, &binding)
	pod := deploy.Spec.Template.Spec
	c := pod.Containers[0]

	// The API server reaches the webhook: configuration → Service → container port.
	for _, w := range mwc.Webhooks {
		ref := w.ClientConfig.Service
		if ref == nil || ref.Name != svc.Name || ref.Namespace != svc.Namespace || ref.Port == nil || *ref.Port != 443 {
			t.Errorf("webhook %s calls %+v, not Service %s/%s port 443", w.Name, ref, svc.Namespace, svc.Name)
		}
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 || portNamed(c, svc.Spec.Ports[0].TargetPort.StrVal) != 9443 ||
		!argsHave(c, "--port=9443") {
		t.Errorf("Service ports %+v do not lead to the webhook's port 9443", svc.Spec.Ports)
	}
	if !selects(svc.Spec.Selector, deploy.Spec.Template.Labels) {
		t.Errorf("Service selector %v does not select the pods %v", svc.Spec.Selector, deploy.Spec.Template.Labels)
	}

	// cert-manager: annotation → Certificate → Secret → mounted at --cert-dir, for the
	// Service's DNS names.
	var cert struct {
		Spec struct {
			SecretName string   `json:"secretName"`
			DNSNames   []string `json:"dnsNames"`
			IssuerRef  struct {
				Name string `json:"name"`
			} `json:"issuerRef"`
		} `json:"spec"`
	}
	certObj := m.get(t, "Certificate", servingCertificate, nil)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(certObj.Object, &cert); err != nil {
		t.Fatal(err)
	}
	if got, want := mwc.Annotations["cert-manager.io/inject-ca-from"], certObj.GetNamespace()+"/"+certObj.GetName(); got != want {
		t.Errorf("inject-ca-from = %q, want the serving Certificate %q", got, want)
	}
	svcDNS := svc.Name + "." + svc.Namespace + ".svc"
	if !slices.Equal(cert.Spec.DNSNames, []string{svcDNS, svcDNS + ".cluster.local"}) {
		t.Errorf("serving Certificate dnsNames = %v, want the Service's %s[.cluster.local]", cert.Spec.DNSNames, svcDNS)
	}
	if v := volumeNamed(pod, "certs"); v == nil || v.Secret == nil || v.Secret.SecretName != cert.Spec.SecretName ||
		mountPathOf(c, "certs") != "/etc/webhook/certs" || !argsHave(c, "--cert-dir=/etc/webhook/certs") {
		t.Errorf("the serving Certificate's Secret %q is not what --cert-dir reads", cert.Spec.SecretName)
	}
	if !m.has("Issuer", cert.Spec.IssuerRef.Name) {
		t.Errorf("the serving Certificate's Issuer %q is missing", cert.Spec.IssuerRef.Name)
	}

	// The configuration: a generated ConfigMap, mounted where --config points, that parses.
	v := volumeNamed(pod, "config")
	if v == nil || v.ConfigMap == nil || !strings.HasPrefix(v.ConfigMap.Name, "emissary-istio-webhook-config-") {
		t.Fatalf("config volume %+v is not the generated (hash-suffixed) ConfigMap", v)
	}
	var cm corev1.ConfigMap
	m.get(t, "ConfigMap", v.ConfigMap.Name, &cm)
	if mountPathOf(c, "config") != "/etc/webhook/config" || !argsHave(c, "--config=/etc/webhook/config/config.yaml") {
		t.Error("--config does not point at the mounted ConfigMap's config.yaml")
	}
	cfg, err := inject.ParseConfig([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("the shipped configuration does not parse: %v", err)
	}
	if cfg.Mapping.TLSContext != "istio-upstream" {
		t.Errorf("mapping.tlsContext = %q, want the tls-context component's istio-upstream", cfg.Mapping.TLSContext)
	}

	// Image, replicas, probes, metrics.
	if !strings.HasPrefix(c.Image, "ghcr.io/emissary-istio/emissary-istio-webhook:") {
		t.Errorf("image = %q", c.Image)
	}
	if deploy.Spec.Replicas == nil || *deploy.Spec.Replicas != 2 || pod.Affinity == nil || pod.Affinity.PodAntiAffinity == nil {
		t.Error("want 2 replicas with pod anti-affinity")
	}
	var pdb policyv1.PodDisruptionBudget
	m.get(t, "PodDisruptionBudget", webhookName, &pdb)
	if pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, deploy.Spec.Template.Labels) {
		t.Error("the PodDisruptionBudget does not select the webhook's pods")
	}
	// A drain never blocks, whatever the replica count (TestPodDisruptionBudgetDrains).
	if pdb.Spec.MinAvailable != nil || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget minAvailable %v, maxUnavailable %v: want only maxUnavailable 1", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
	}
	for probe, path := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path || portNamed(c, probe.HTTPGet.Port.StrVal) != 8081 {
			t.Errorf("no %s probe on the health port 8081", path)
		}
	}
	if !argsHave(c, "--health-probe-bind-address=:8081") || !argsHave(c, "--metrics-bind-address=:8080") || portNamed(c, "metrics") != 8080 {
		t.Error("health and metrics listeners do not match the container ports")
	}

	// Least privilege: namespaces and Istio's webhook configurations get/list/watch, bound to
	// the pod's ServiceAccount; Istio's ConfigMaps only in Istio's namespace (the mesh view).
	read := []string{"get", "list", "watch"}
	wantRules := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: read},
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, Verbs: read}}
	if fmt.Sprint(role.Rules) != fmt.Sprint(wantRules) {
		t.Errorf("ClusterRole rules = %+v, want only %+v", role.Rules, wantRules)
	}
	var meshRole rbacv1.Role
	var meshBinding rbacv1.RoleBinding
	m.get(t, "Role", webhookName+"-mesh", &meshRole)
	m.get(t, "RoleBinding", webhookName+"-mesh", &meshBinding)
	wantMesh := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: read}}
	if meshRole.Namespace != "istio-system" || meshBinding.Namespace != "istio-system" || fmt.Sprint(meshRole.Rules) != fmt.Sprint(wantMesh) {
		t.Errorf("Role %s/%s rules %+v: want only %+v, in istio-system", meshRole.Namespace, meshRole.Name, meshRole.Rules, wantMesh)
	}
	if s := meshBinding.Subjects; len(s) != 1 || s[0].Name != pod.ServiceAccountName || s[0].Namespace != installNamespace {
		t.Errorf("RoleBinding subjects %+v are not the pod's ServiceAccount %s", s, pod.ServiceAccountName)
	}
	if s := binding.Subjects; len(s) != 1 || s[0].Kind != "ServiceAccount" || s[0].Name != pod.ServiceAccountName || s[0].Namespace != installNamespace {
		t.Errorf("ClusterRoleBinding subjects %+v are not the pod's ServiceAccount %s", s, pod.ServiceAccountName)
	}
	if !m.has("ServiceAccount", pod.ServiceAccountName) || !m.has("Namespace", installNamespace) {
		t.Error("the ServiceAccount or the Namespace is missing")
	}
}

func checkSelfSigned(t *testing.T, m *manifests) {
	for _, u := range m.objects {
		if strings.HasPrefix(u.GetAPIVersion(), "cert-manager.io/") {
			t.Errorf("%s %s is left: it needs cert-manager", u.GetKind(), u.GetName())
		}
	}
	var (
		mwc    admissionregistrationv1.MutatingWebhookConfiguration
		deploy appsv1.Deployment
		role   rbacv1.ClusterRole
	)
	m.get(t, "MutatingWebhookConfiguration", webhookName, &mwc)
	m.get(t, "Deployment", webhookName, &deploy)
	m.get(t, "ClusterRole", "emissary-istio-webhook-self-signed", &role)
	if _, ok := mwc.Annotations["cert-manager.io/inject-ca-from"]; ok {
		t.Error("the inject-ca-from annotation is left")
	}
	pod := deploy.Spec.Template.Spec
	c := pod.Containers[0]
	for _, arg := range []string{"--self-signed", "--service-name=emissary-istio-webhook", "--webhook-config-name=" + mwc.Name} {
		if !argsHave(c, arg) {
			t.Errorf("missing arg %s", arg)
		}
	}
	if v := volumeNamed(pod, "certs"); v == nil || v.Secret != nil || v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
		t.Errorf("certs volume %+v, want only an in-memory emptyDir", v)
	}
	for _, vm := range c.VolumeMounts {
		if vm.Name == "certs" && vm.ReadOnly {
			t.Error("the certificate directory must be writable in self-signed mode")
		}
	}
	want := []rbacv1.PolicyRule{{
		APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"},
		ResourceNames: []string{mwc.Name}, Verbs: []string{"get", "list", "watch", "update", "patch"},
	}}
	if fmt.Sprint(role.Rules) != fmt.Sprint(want) {
		t.Errorf("self-signed rules = %+v, want %+v", role.Rules, want)
	}
}

func checkTLSContext(t *testing.T, m *manifests, namespace string, wantSpec map[string]any) {
	u := m.get(t, "TLSContext", mapping.DefaultTLSContext, nil)
	if u.GetNamespace() != namespace || fmt.Sprint(u.Object["spec"]) != fmt.Sprint(wantSpec) {
		t.Errorf("TLSContext %s/%s spec %v, want %s spec %v", u.GetNamespace(), u.GetName(), u.Object["spec"], namespace, wantSpec)
	}
}

func checkTracing(t *testing.T, m *manifests) {
	u := m.get(t, "TracingService", "tracing", nil)
	want := map[string]any{"service": "zipkin.istio-system:9411", "driver": "zipkin", "config": map[string]any{},
		"tag_headers": []any{":authority", ":path"}}
	if fmt.Sprint(u.Object["spec"]) != fmt.Sprint(want) {
		t.Errorf("TracingService spec = %v, want %v", u.Object["spec"], want)
	}
}

func checkStrictMTLS(t *testing.T, m *manifests) {
	u := m.get(t, "PeerAuthentication", "default", nil)
	mode, _, _ := unstructured.NestedString(u.Object, "spec", "mtls", "mode")
	if u.GetNamespace() != "istio-system" || mode != "STRICT" {
		t.Errorf("PeerAuthentication %s/default mode %q, want istio-system STRICT", u.GetNamespace(), mode)
	}
}

func checkPrometheus(t *testing.T, m *manifests) {
	var (
		cm     corev1.ConfigMap
		svc    corev1.Service
		deploy appsv1.Deployment
	)
	m.get(t, "ConfigMap", "emissary-istio-scrape-configs", &cm)
	m.get(t, "Service", "emissary-istio-webhook-metrics", &svc)
	m.get(t, "Deployment", webhookName, &deploy)
	type relabel struct {
		SourceLabels []string `json:"source_labels"`
		Action       string   `json:"action"`
		Regex        string   `json:"regex"`
		TargetLabel  string   `json:"target_label"`
	}
	var file struct {
		ScrapeConfigs []struct {
			JobName string `json:"job_name"`
			SD      []struct {
				Role       string `json:"role"`
				Namespaces struct{ Names []string }
			} `json:"kubernetes_sd_configs"`
			Relabel []relabel `json:"relabel_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.UnmarshalStrict([]byte(cm.Data["emissary-istio-scrape-configs.yaml"]), &file); err != nil {
		t.Fatalf("scrape configs: %v", err)
	}
	jobs := map[string]string{}
	for _, j := range file.ScrapeConfigs {
		if len(j.SD) != 1 || j.SD[0].Role != "endpoints" || len(j.Relabel) != 2 {
			t.Errorf("job %s is not an endpoints job with two relabelings", j.JobName)
			continue
		}
		jobs[j.JobName] = fmt.Sprint(j.SD[0].Namespaces.Names, j.Relabel[0], j.Relabel[1])
	}
	podName := relabel{SourceLabels: []string{"__meta_kubernetes_endpoint_address_target_name"}, Action: "replace", TargetLabel: "pod_name"}
	keep := func(regex string) relabel {
		return relabel{SourceLabels: []string{"__meta_kubernetes_service_name", "__meta_kubernetes_endpoint_port_name"}, Action: "keep", Regex: regex}
	}
	want := map[string]string{
		// The seed's job, as its guide prints it.
		"ambassador": fmt.Sprint([]string{"ambassador"}, keep("ambassador-admin;ambassador-admin"), podName),
		// The webhook's: the metrics Service and its port, by name.
		"emissary-istio-webhook": fmt.Sprint([]string{svc.Namespace}, keep(svc.Name+";"+svc.Spec.Ports[0].Name), podName),
	}
	if fmt.Sprint(jobs) != fmt.Sprint(want) {
		t.Errorf("scrape jobs\n got %v\nwant %v", jobs, want)
	}
	c := deploy.Spec.Template.Spec.Containers[0]
	if portNamed(c, svc.Spec.Ports[0].TargetPort.StrVal) != 8080 || !selects(svc.Spec.Selector, deploy.Spec.Template.Labels) {
		t.Error("the metrics Service does not lead to the webhook's metrics port")
	}
	for _, annotations := range []map[string]string{svc.Annotations, deploy.Spec.Template.Annotations} {
		if annotations["prometheus.io/scrape"] != "true" || annotations["prometheus.io/port"] != "8080" || annotations["prometheus.io/path"] != "/metrics" {
			t.Errorf("scrape annotations %v", annotations)
		}
	}
}

// checkGrafanaDashboard: the dashboard file, unchanged, in a ConfigMap Grafana's dashboard
// sidecar picks up by its label (TestDashboard checks the dashboard itself).
func checkGrafanaDashboard(t *testing.T, m *manifests) {
	var cm corev1.ConfigMap
	m.get(t, "ConfigMap", "emissary-istio-dashboard", &cm)
	want := mustRead(t, dashboardFile)
	if cm.Namespace != "istio-system" || cm.Labels["grafana_dashboard"] != "1" || cm.Data[filepath.Base(dashboardFile)] != want {
		t.Errorf("dashboard ConfigMap %s/%s labels %v, files %d: want istio-system, grafana_dashboard=1 and the JSON file",
			cm.Namespace, cm.Name, cm.Labels, len(cm.Data))
	}
}

func portNamed(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func argsHave(c corev1.Container, arg string) bool { return slices.Contains(c.Args, arg) }

func volumeNamed(pod corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

func mountPathOf(c corev1.Container, name string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return m.MountPath
		}
	}
	return ""
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
