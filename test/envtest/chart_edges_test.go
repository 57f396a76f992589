package envtest

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestHelmChartEdges renders the chart with the real helm and checks the values at its
// edges: the PodDisruptionBudget at every replica count, the caBundle's room for the
// replicas, the securityContext overrides, the NetworkPolicy, the PeerAuthentication kept,
// the dashboard per release and the helm test's objects. (TestHelmChart applies the same
// renderings to the API server; TestHelmLint runs the schema over the values.)
func TestHelmChartEdges(t *testing.T) {
	h := newHelm(t, nil)

	t.Run("the PodDisruptionBudget never blocks a drain", func(t *testing.T) {
		for _, replicas := range []int{1, 2, 5} {
			var pdb policyv1.PodDisruptionBudget
			h.template("--set", "replicaCount="+strconv.Itoa(replicas)).get(t, "PodDisruptionBudget", releaseName, &pdb)
			if pdb.Spec.MinAvailable != nil || pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) {
				t.Errorf("replicaCount %d: minAvailable %v, maxUnavailable %v; want only maxUnavailable 1", replicas, pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
			}
		}
	})

	t.Run("the self-signed caBundle has room for every replica", func(t *testing.T) {
		for _, c := range []struct {
			replicas int
			want     string // "": the webhook's default, 10
		}{{1, ""}, {2, ""}, {4, ""}, {5, "--max-bundle-cas=12"}, {11, "--max-bundle-cas=24"}} {
			var d appsv1.Deployment
			h.template("--set", "tls.mode=self-signed,replicaCount="+strconv.Itoa(c.replicas)).get(t, "Deployment", releaseName, &d)
			args := d.Spec.Template.Spec.Containers[0].Args
			got := slices.IndexFunc(args, func(a string) bool { return strings.HasPrefix(a, "--max-bundle-cas=") })
			switch {
			case c.want == "" && got >= 0:
				t.Errorf("replicaCount %d: %s, want the default", c.replicas, args[got])
			case c.want != "" && (got < 0 || args[got] != c.want):
				t.Errorf("replicaCount %d: args %q, want %s", c.replicas, args, c.want)
			}
		}
	})

	t.Run("securityContext: restricted by default, overridable", func(t *testing.T) {
		m := h.template()
		var d appsv1.Deployment
		m.get(t, "Deployment", releaseName, &d)
		var pod corev1.Pod
		m.get(t, "Pod", selftestPod, &pod)
		psc, sc := d.Spec.Template.Spec.SecurityContext, d.Spec.Template.Spec.Containers[0].SecurityContext
		if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != 65532 || sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("default securityContexts %+v / %+v", psc, sc)
		}
		if mustJSON(t, pod.Spec.SecurityContext) != mustJSON(t, psc) || mustJSON(t, pod.Spec.Containers[0].SecurityContext) != mustJSON(t, sc) {
			t.Error("the helm test's Pod does not run with the webhook's securityContexts")
		}

		m = h.template(overrides...)
		m.get(t, "Deployment", releaseName, &d)
		m.get(t, "Pod", selftestPod, &pod)
		for what, spec := range map[string]corev1.PodSpec{"Deployment": d.Spec.Template.Spec, "helm test Pod": pod.Spec} {
			psc, sc := spec.SecurityContext, spec.Containers[0].SecurityContext
			if psc == nil || psc.RunAsUser != nil || psc.FSGroup != nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
				t.Errorf("%s: podSecurityContext override rendered as %+v", what, psc)
			}
			// Merged into the default: the rest of the restricted settings stay.
			if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 1000650000 || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: securityContext override rendered as %+v", what, sc)
			}
		}
	})

	t.Run("NetworkPolicy: webhook port open, metrics port from the listed namespaces", func(t *testing.T) {
		if h.template().has("NetworkPolicy", "") {
			t.Error("a NetworkPolicy by default")
		}
		m := h.template(allOptions...)
		var d appsv1.Deployment
		m.get(t, "Deployment", releaseName, &d)
		var np networkingv1.NetworkPolicy
		m.get(t, "NetworkPolicy", releaseName, &np)
		if !selects(np.Spec.PodSelector.MatchLabels, d.Spec.Template.Labels) || !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
			t.Fatalf("the NetworkPolicy does not select the webhook's pods for ingress: %+v", np.Spec)
		}
		c := d.Spec.Template.Spec.Containers[0]
		if len(np.Spec.Ingress) != 2 {
			t.Fatalf("%d ingress rules, want 2", len(np.Spec.Ingress))
		}
		webhook, metrics := np.Spec.Ingress[0], np.Spec.Ingress[1]
		if len(webhook.From) != 0 || len(webhook.Ports) != 1 || portNamed(c, webhook.Ports[0].Port.StrVal) != 9443 {
			t.Errorf("webhook rule %+v: want port 9443 (webhook) from anywhere", webhook)
		}
		if len(metrics.Ports) != 1 || portNamed(c, metrics.Ports[0].Port.StrVal) != 8080 || len(metrics.From) != 1 ||
			metrics.From[0].PodSelector != nil || metrics.From[0].NamespaceSelector == nil ||
			mustJSON(t, metrics.From[0].NamespaceSelector.MatchExpressions) != `[{"key":"kubernetes.io/metadata.name","operator":"In","values":["istio-system","monitoring"]}]` {
			t.Errorf("metrics rule %+v: want port 8080 (metrics) from namespaces istio-system and monitoring only", metrics)
		}
		m = h.template("--set", "networkPolicy.enabled=true", "--set-json", "networkPolicy.metricsNamespaces=[]")
		m.get(t, "NetworkPolicy", releaseName, &np)
		if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 0 {
			t.Errorf("metricsNamespaces []: rules %+v, want the webhook port's only", np.Spec.Ingress)
		}
	})

	t.Run("the PeerAuthentication is kept", func(t *testing.T) {
		pa := h.template("--set", "strictMTLS.enabled=true").get(t, "PeerAuthentication", "default", nil)
		if pa.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("PeerAuthentication annotations %v: want helm.sh/resource-policy keep", pa.GetAnnotations())
		}
	})

	t.Run("the dashboard per release, its JSON inside the chart", func(t *testing.T) {
		want := mustRead(t, dashboardFile)
		var names []string
		for _, release := range []string{"edge-a", "edge-b"} {
			out := h.must("template", release, chartDir(), "--namespace", releaseNamespace, "--kube-version", kubeVersion(t), "--set", "grafana.dashboard.enabled=true")
			name := release + "-" + chartName + "-dashboard"
			var cm corev1.ConfigMap
			parseManifests(t, []byte(out)).get(t, "ConfigMap", name, &cm)
			if cm.Data[name+".json"] != want || len(cm.Data) != 1 {
				t.Errorf("release %s: ConfigMap %s has files %d, want only %s.json, the dashboard", release, name, len(cm.Data), name)
			}
			names = append(names, cm.Name)
		}
		if names[0] == names[1] {
			t.Errorf("two releases, one dashboard ConfigMap %s", names[0])
		}
		fi, err := os.Lstat(filepath.Join(chartDir(), "files", filepath.Base(dashboardFile)))
		if err != nil || !fi.Mode().IsRegular() {
			t.Errorf("the chart's dashboard is not a regular file (a symlink is lost when a source is packaged): %v %v", fi.Mode(), err)
		}
	})

	t.Run("helm test objects", func(t *testing.T) {
		m := h.template(overrides...)
		var d appsv1.Deployment
		m.get(t, "Deployment", releaseName, &d)
		var pod corev1.Pod
		m.get(t, "Pod", selftestPod, &pod)
		c := pod.Spec.Containers[0]
		if pod.Annotations["helm.sh/hook"] != "test" || pod.Spec.RestartPolicy != corev1.RestartPolicyNever || c.Image != d.Spec.Template.Spec.Containers[0].Image {
			t.Errorf("the test Pod: hook %q, restartPolicy %s, image %s; want a test hook running the webhook's image once",
				pod.Annotations["helm.sh/hook"], pod.Spec.RestartPolicy, c.Image)
		}
		wantArgs := []string{"selftest", "--config=/etc/webhook/config/config.yaml", "--namespace=" + selftestPod,
			"--webhook-config-name=" + releaseName, "--namespace-labels=env=prod,team=edge"}
		if !slices.Equal(c.Args, wantArgs) {
			t.Errorf("the test Pod's args %q, want %q", c.Args, wantArgs)
		}
		var sa corev1.ServiceAccount
		m.get(t, "ServiceAccount", selftestPod, &sa)
		var role rbacv1.ClusterRole
		m.get(t, "ClusterRole", selftestPod, &role)
		var binding rbacv1.ClusterRoleBinding
		m.get(t, "ClusterRoleBinding", selftestPod, &binding)
		for _, o := range []map[string]string{sa.Annotations, role.Annotations, binding.Annotations} {
			if o["helm.sh/hook"] != "test" || o["helm.sh/hook-weight"] != "-1" {
				t.Errorf("RBAC hook annotations %v: want a test hook created before the Pod", o)
			}
		}
		if pod.Spec.ServiceAccountName != sa.Name || binding.Subjects[0].Name != sa.Name || binding.RoleRef.Name != role.Name {
			t.Error("the test Pod does not run with the test's RBAC")
		}
	})
}
