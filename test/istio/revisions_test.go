package istio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
	"github.com/emissary-istio/emissary-istio-webhook/test/kubelet"
)

// upgradeTimeout bounds TestRevisionTagUpgrade: two istiods, two agents, three audits.
const upgradeTimeout = 3 * time.Minute

// The revisions of a revision-based install, each from Istio's own chart rendered by the real
// helm. Their images are only names: whatever the image, the process that runs as the proxy
// here is the pilot-agent this suite built (proxyImage), of the release under test.
var (
	// stable: an older release from a private mirror, distroless (global.variant, which the
	// chart also writes into the mesh config's defaultConfig.image.imageType).
	stableValues = []string{"global.hub=registry.example.com/istio", "global.tag=1.28.2", "global.variant=distroless"}
	// canary: the release under test from Istio's own hub (the suite's defaults).
	canaryValues []string
	// legacy: a control plane older than the proxy the webhook would render by default.
	legacyValues = []string{"global.hub=mirror.example.org/istio", "global.tag=1.27.3"}
)

// tagProdStable is the revision tag workloads select: Istio's recommended way to upgrade.
const tagProdStable = "prod-stable"

// TestRevisionTagUpgrade is Istio's canary upgrade with revision tags, as its Helm upgrade
// guide has it, with the webhook configured with no Istio setting at all:
//
//  1. revisions stable and canary installed from Istio's chart (two real istiods), tag
//     prod-stable pointed at stable; Emissary applied with kubectl into a namespace labelled
//     istio.io/rev=prod-stable is stored with stable's sidecar, exactly as Istio's own
//     injector renders it for stable, and its stored istio-proxy, run as the real pilot-agent,
//     gets certificates and XDS from istiod-stable (and not from istiod-canary);
//  2. the tag moved to canary by the chart's own mechanism: `webhook audit` names the
//     workload, and neither a scale nor a re-apply of the same manifest changes its template
//     (no surprise rollout of the edge);
//  3. `kubectl rollout restart`: the new template is canary's, and its agent connects to
//     istiod-canary; audit no longer names it;
//  4. the tag rolled back to legacy (1.27.3): audit flags the 1.29 sidecar as newer than its
//     control plane.
func TestRevisionTagUpgrade(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), upgradeTimeout)
	defer cancel()
	useConfig(t, "") // no Istio setting: everything comes from the cluster's Istio
	dir := t.TempDir()
	t.Cleanup(func() {
		if err := deleteRevisionTags(env, tagProdStable); err != nil {
			t.Error(err)
		}
	})
	stable, canary := startRevisions(ctx, t, dir)
	if err := stable.PointTags(ctx, tagProdStable); err != nil {
		t.Fatal(err)
	}
	tagService := "istiod-revision-tag-" + tagProdStable + ".istio-system.svc"

	// 1. Injected for stable, through the tag.
	ns := "revtag-upgrade"
	manifest := seedManifest(t, ns)
	waitForServing(ctx, t, ns, map[string]string{"istio.io/rev": tagProdStable}, "stable")
	d, warnings := applyEmissary(t, seedFile, ns, map[string]string{"istio.io/rev": tagProdStable})
	t.Logf("kubectl apply: %s", warnings)
	checkRenderedAsIstio(ctx, t, d, "stable", manifest)
	pod := kubelet.PodFromTemplate(ns, d.Name+"-0", &d.Spec.Template)
	routes := map[string]*Istiod{stable.Service(): stable, canary.Service(): canary, tagService: stable}
	agent := startAgentRouted(t, ctx, filepath.Join(dir, "agent-stable"), pod, stable, routes)
	agent.checkCertificates(ctx, "cluster.local")
	agent.checkXDS(ctx)
	agent.checkFlagsRead()
	checkNotConnected(ctx, t, canary, pod)
	agent.agent.Stop()
	if found := auditFindings(t, ns); len(found) != 0 {
		t.Errorf("audit names the workload right after injection: %+v", found)
	}

	// 2. The tag moves to canary: audit names the workload, nothing rolls it out.
	if err := canary.PointTags(ctx, tagProdStable); err != nil {
		t.Fatal(err)
	}
	routes[tagService] = canary
	waitForServing(ctx, t, ns, nil, "canary") // the webhook's informers saw the move
	checkAuditReason(t, auditFindingFor(t, ns, "Deployment/"+d.Name), inject.AuditMovedRevision, "istiod-canary")
	before := d.Spec.Template.DeepCopy()
	if _, _, err := env.Kubectl(nil, "-n", ns, "scale", "deployment", d.Name, "--replicas=2"); err != nil {
		t.Fatal(err)
	}
	checkTemplateUnchanged(t, d, before, "kubectl scale")
	if _, _, err := env.Kubectl(manifest, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	checkTemplateUnchanged(t, d, before, "a re-apply of the same manifest")

	// 3. kubectl rollout restart: the new template is canary's, its agent connects to canary.
	if _, _, err := env.Kubectl(nil, "-n", ns, "rollout", "restart", "deployment", d.Name); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(d), d); err != nil {
		t.Fatal(err)
	}
	checkRenderedAsIstio(ctx, t, d, "canary", manifest)
	pod = kubelet.PodFromTemplate(ns, d.Name+"-1", &d.Spec.Template)
	agent = startAgentRouted(t, ctx, filepath.Join(dir, "agent-canary"), pod, canary, routes)
	agent.checkCertificates(ctx, "cluster.local")
	agent.checkXDS(ctx)
	checkNotConnected(ctx, t, stable, pod)
	agent.agent.Stop()
	if found := auditFindings(t, ns); len(found) != 0 {
		t.Errorf("audit still names the workload after the restart: %+v", found)
	}

	// 4. A rollback to an older control plane than the proxy: unsupported skew.
	legacy := installRevision(ctx, t, IstiodOptions{Revision: "legacy", Values: legacyValues})
	if err := legacy.PointTags(ctx, tagProdStable); err != nil {
		t.Fatal(err)
	}
	checkAuditReason(t, auditFindingFor(t, ns, "Deployment/"+d.Name), inject.AuditUnsupportedSkew, "1.29", "1.27")
}

// checkAuditReason: one of findings has reason, and its message says each of words.
func checkAuditReason(t *testing.T, findings []auditFinding, reason string, words ...string) {
	t.Helper()
	if !slices.ContainsFunc(findings, func(f auditFinding) bool {
		return f.Reason == reason && !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(f.Message, w) })
	}) {
		t.Errorf("no finding of audit has reason %s and names %v: %+v", reason, words, findings)
	}
}

// startRevisions runs istiod-stable and istiod-canary, each installed from Istio's chart
// with what the webhook reads (Install). One after the other: the first creates the CA the
// revisions share (istio-ca-secret in istio-system), the second loads it.
func startRevisions(ctx context.Context, t *testing.T, dir string) (stable, canary *Istiod) {
	t.Helper()
	start := func(rev string, values []string) *Istiod {
		d, err := StartIstiod(ctx, env, bin, filepath.Join(dir, "istiod-"+rev), IstiodOptions{Revision: rev, Install: true, Values: values})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Stop)
		return d
	}
	return start("stable", stableValues), start("canary", canaryValues)
}

// installRevision is a revision installed from Istio's chart without its istiod: what the
// webhook reads of it (its ConfigMaps, Services and injector webhook, as the chart renders
// them) and what PointTags needs.
func installRevision(ctx context.Context, t *testing.T, opts IstiodOptions) *Istiod {
	t.Helper()
	if err := ensureIstioNamespace(ctx, env); err != nil {
		t.Fatal(err)
	}
	chart, err := renderDiscoveryChart(opts)
	if err != nil {
		t.Fatal(err)
	}
	d := &Istiod{Revision: opts.Revision, Chart: chart, env: env, opts: opts}
	t.Cleanup(d.Stop)
	for _, u := range chart {
		switch u.GetKind() {
		case "ConfigMap", "Service", "MutatingWebhookConfiguration":
			if err := d.apply(ctx, u.DeepCopy()); err != nil {
				t.Fatal(err)
			}
		}
	}
	return d
}

// waitForServing returns once the webhook renders a workload of namespace ns (created with
// nsLabels unless it exists) from revision: its informers have seen what was just applied
// to the API server. It asks with server-side dry-runs of the seed's Deployment under another
// name, until the rendered image and discovery address are those Istio's injector renders
// for the revision.
func waitForServing(ctx context.Context, t *testing.T, ns string, nsLabels map[string]string, revision string) {
	t.Helper()
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: nsLabels}}
	if err := env.Client.Create(ctx, namespace); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	manifest := seedManifest(t, ns)
	istio, err := istioInjects(ctx, t.TempDir(), revision, manifest)
	if err != nil {
		t.Fatal(err)
	}
	want := istio.Proxy.Image + " " + discoveryAddress(t, istio.Proxy)
	got := ""
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		probe := &appsv1.Deployment{}
		if err := json.Unmarshal(manifest, probe); err != nil {
			return false, err
		}
		probe.Name = "mesh-view-probe"
		if err := env.Client.Create(ctx, probe, client.DryRunAll); err != nil {
			got = err.Error()
			return false, nil
		}
		if c := podContainer(&corev1.Pod{Spec: probe.Spec.Template.Spec}, inject.ProxyContainerName); c != nil {
			got = c.Image + " " + discoveryAddress(t, c)
		}
		return got == want, nil
	})
	if err != nil {
		t.Fatalf("the webhook does not render revision %s's sidecar in %s (%q) within the time: %v; it renders %q", revision, ns, want, err, got)
	}
}

// seedManifest is the seed's Deployment in namespace ns, as applyEmissary applies it.
func seedManifest(t *testing.T, ns string) []byte {
	t.Helper()
	raw, err := os.ReadFile(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := envtest.ParseObjects(raw)
	if err != nil || len(objs) != 1 {
		t.Fatalf("%s: %v", seedFile, err)
	}
	objs[0].SetNamespace(ns)
	b, err := objs[0].MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkRenderedAsIstio: the stored template's istio-proxy has what Istio's own injector
// renders for manifest with revision's ConfigMaps (as the API server stores them): the
// image (which is also pkg/kube/inject's ProxyImage for those values), the addresses it
// dials and the mesh identity.
func checkRenderedAsIstio(ctx context.Context, t *testing.T, d *appsv1.Deployment, revision string, manifest []byte) {
	t.Helper()
	ours := podContainer(&corev1.Pod{Spec: d.Spec.Template.Spec}, inject.ProxyContainerName)
	if ours == nil {
		t.Fatalf("%s/%s is stored without %s", d.Namespace, d.Name, inject.ProxyContainerName)
	}
	istio, err := istioInjects(ctx, t.TempDir(), revision, manifest)
	if err != nil {
		t.Fatal(err)
	}
	if ours.Image != istio.Proxy.Image {
		t.Errorf("%s: stored image %s, Istio's injector renders %s for revision %s", d.Namespace, ours.Image, istio.Proxy.Image, revision)
	}
	for _, name := range []string{"CA_ADDR", "ISTIO_META_MESH_ID", "ISTIO_META_CLUSTER_ID"} {
		if got, want := envValue(ours, name), envValue(istio.Proxy, name); got != want {
			t.Errorf("%s: stored %s=%q, Istio's injector renders %q for revision %s", d.Namespace, name, got, want, revision)
		}
	}
	if got, want := discoveryAddress(t, ours), discoveryAddress(t, istio.Proxy); got != want {
		t.Errorf("%s: stored discovery address %q, Istio's injector renders %q for revision %s", d.Namespace, got, want, revision)
	}
	t.Logf("revision %s: %s, discovery %s, CA %s", revision, ours.Image, discoveryAddress(t, ours), envValue(ours, "CA_ADDR"))
}

// discoveryAddress is the discovery address c's agent uses: its --discoveryAddress flag, else
// the one in its PROXY_CONFIG (Istio's injector writes it there).
func discoveryAddress(t *testing.T, c *corev1.Container) string {
	t.Helper()
	for i, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--discoveryAddress="); ok {
			return v
		}
		if a == "--discoveryAddress" && i+1 < len(c.Args) {
			return c.Args[i+1]
		}
	}
	var pc struct {
		DiscoveryAddress string `json:"discoveryAddress"`
	}
	if v := envValue(c, "PROXY_CONFIG"); v != "" {
		if err := json.Unmarshal([]byte(v), &pc); err != nil {
			t.Errorf("%s PROXY_CONFIG: %v", c.Name, err)
		}
	}
	return pc.DiscoveryAddress
}

// checkNotConnected: istiod lists no connection of pod's proxy.
func checkNotConnected(ctx context.Context, t *testing.T, istiod *Istiod, pod *corev1.Pod) {
	t.Helper()
	conns, err := istiod.ConnectedProxies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if hasPrefix(conns, pod.Name+"."+pod.Namespace+"-") {
		t.Errorf("istiod %s lists the proxy of %s/%s too: %v", istiod.Revision, pod.Namespace, pod.Name, conns)
	}
}

// checkTemplateUnchanged: d's stored pod template is still before after what.
func checkTemplateUnchanged(t *testing.T, d *appsv1.Deployment, before *corev1.PodTemplateSpec, what string) {
	t.Helper()
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(d), d); err != nil {
		t.Fatal(err)
	}
	if !apiequality.Semantic.DeepEqual(before, &d.Spec.Template) {
		b, _ := yaml.Marshal(before)
		a, _ := yaml.Marshal(d.Spec.Template)
		t.Errorf("%s changed the pod template (a rollout of the edge):\n--- before:\n%s\n--- after:\n%s", what, b, a)
	}
}

// auditFinding is one entry of `webhook audit -o json`.
type auditFinding struct {
	Kind, Namespace, Name, Reason, Message string
	Notice                                 bool
}

// auditFindings runs `webhook audit -o json` (no --config: it reads the running webhook's
// configuration, or its defaults, as an operator runs it) and returns its findings in ns by
// Kind/Name.
func auditFindings(t *testing.T, ns string) map[string][]auditFinding {
	t.Helper()
	out, _, err := runWebhookCLI(t, "audit", "-o", "json", "--kubeconfig", env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	var all []auditFinding
	if err := json.Unmarshal(out, &all); err != nil {
		t.Fatalf("audit -o json: %v\n%s", err, out)
	}
	found := map[string][]auditFinding{}
	for _, f := range all {
		if f.Namespace == ns {
			found[f.Kind+"/"+f.Name] = append(found[f.Kind+"/"+f.Name], f)
		}
	}
	return found
}

// auditFindingFor is audit's findings for key in ns, at least one: audit reads the cluster
// afresh each run, so what kubectl stored is what it sees.
func auditFindingFor(t *testing.T, ns, key string) []auditFinding {
	t.Helper()
	found := auditFindings(t, ns)
	if len(found[key]) == 0 {
		t.Fatalf("audit does not name %s in %s (findings %+v)", key, ns, found)
	}
	for _, f := range found[key] {
		t.Logf("audit: %s %s: %s", key, f.Reason, f.Message)
	}
	return found[key]
}

var (
	webhookCLIOnce sync.Once
	webhookCLIPath string
	webhookCLIErr  error
)

// runWebhookCLI runs the webhook's command (cmd/webhook, built once) with args; a non-zero
// exit is not an error (audit exits 1 when it finds something).
func runWebhookCLI(t *testing.T, args ...string) (stdout, stderr []byte, err error) {
	t.Helper()
	webhookCLIOnce.Do(func() {
		webhookCLIPath = filepath.Join(env.Dir, "webhook")
		out, err := exec.Command("go", "build", "-o", webhookCLIPath, filepath.Join(envtest.RepoRoot(), "cmd", "webhook")).CombinedOutput()
		if err != nil {
			webhookCLIErr = fmt.Errorf("building cmd/webhook: %w\n%s", err, out)
		}
	})
	if webhookCLIErr != nil {
		return nil, nil, webhookCLIErr
	}
	cmd := exec.Command(webhookCLIPath, args...)
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	stdout, err = cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 {
		err = nil
	}
	if err != nil {
		err = fmt.Errorf("webhook %v: %w: %s", args, err, errOut.String())
	}
	return stdout, errOut.Bytes(), err
}

// TestSidecarAsIstioRendersIt: for revisions whose values name another release, a private
// hub, an image variant, a mesh-wide image type or a full image reference, the webhook
// (with no Istio setting) stores the sidecar Istio's own injector renders for that revision
// from the same ConfigMaps; where the values name no full reference that image is also
// pkg/kube/inject's ProxyImage. The revisions are installed from Istio's chart without an
// istiod: what the webhook renders depends only on what it reads.
func TestSidecarAsIstioRendersIt(t *testing.T) {
	useConfig(t, "")
	for _, tc := range []struct {
		revision string
		values   []string
		image    string // what Istio renders, spelled out for the reader (and checked)
	}{
		{"legacy", legacyValues, "mirror.example.org/istio/proxyv2:1.27.3"},
		{"variant", []string{"global.hub=registry.example.com/istio", "global.tag=1.28.2-distroless", "global.variant=debug"},
			"registry.example.com/istio/proxyv2:1.28.2-debug"},
		// The mesh config's defaultConfig.image.imageType wins over a variant in the tag.
		{"image-type", []string{"global.tag=1.29.1-distroless", "meshConfig.defaultConfig.image.imageType=default"},
			inject.DefaultHub + "/proxyv2:1.29.1"},
		// A full reference is taken verbatim by the injection template (ProxyImage would
		// prefix the hub).
		{"full-reference", []string{"global.proxy.image=registry.example.com/team/istio-proxy:1.29.1-fips",
			"global.caAddress=ca.example.org:15012", "global.meshID=edge-mesh"},
			"registry.example.com/team/istio-proxy:1.29.1-fips"},
	} {
		t.Run(tc.revision, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), caseTimeout)
			defer cancel()
			installRevision(ctx, t, IstiodOptions{Revision: tc.revision, Values: tc.values})
			ns := "revision-" + tc.revision
			waitForServing(ctx, t, ns, map[string]string{"istio.io/rev": tc.revision}, tc.revision)
			d, _ := applyEmissary(t, seedFile, ns, map[string]string{"istio.io/rev": tc.revision})
			checkRenderedAsIstio(ctx, t, d, tc.revision, seedManifest(t, ns))
			istio, err := istioInjects(ctx, t.TempDir(), tc.revision, seedManifest(t, ns))
			if err != nil {
				t.Fatal(err)
			}
			if istio.Proxy.Image != tc.image {
				t.Errorf("Istio's injector renders %s, the table says %s", istio.Proxy.Image, tc.image)
			}
			if fullRef := tc.revision == "full-reference"; (istio.ProxyImage == istio.Proxy.Image) == fullRef {
				t.Errorf("pkg/kube/inject's ProxyImage is %s, Istio's injector renders %s", istio.ProxyImage, istio.Proxy.Image)
			}
		})
	}
}
