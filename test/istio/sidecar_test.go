package istio

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
	"github.com/emissary-istio/emissary-istio-webhook/test/kubelet"
)

// caseTimeout bounds each case: istiod ready, the Deployment applied, the agent's certificates
// and its XDS connection. On 2 loaded cores a case takes about 10-20 s.
const caseTimeout = 40 * time.Second

// TestDefaultIstioVersionIsTheOneUnderTest: the webhook's default proxy version is the Istio
// release this suite runs, so what the suite shows is what a default install renders.
func TestDefaultIstioVersionIsTheOneUnderTest(t *testing.T) {
	out, err := exec.Command(filepath.Join(bin, "pilot-agent"), "version", "--short").Output()
	if err != nil {
		t.Fatal(err)
	}
	// "client version: 1.29.1"
	if got := strings.TrimSpace(string(out[bytes.LastIndexByte(out, ' ')+1:])); got != inject.DefaultIstioVersion {
		t.Errorf("pilot-agent under test is %s, the default istioVersion is %s", got, inject.DefaultIstioVersion)
	}
}

// TestInjectedSidecarAgainstIstio: the seed's Deployment, applied with kubectl through the
// webhook; the istio-proxy container the API server STORED is run as a real pilot-agent in a
// pod's view of the world (its volumes at their mountPaths, env as the kubelet resolves it,
// /etc/hosts for istiod's Service names, its own network namespace), against a real istiod on
// the same API server. It must get its certificates from the istiod its CA_ADDR names, write
// them where Emissary reads them, and take its configuration (XDS) from the istiod its
// configuration names: with a revision, only istiod-<revision> exists.
func TestInjectedSidecarAgainstIstio(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config string // webhook configuration keys
		istiod IstiodOptions
	}{
		{"default", "", IstiodOptions{}},
		{"revision", "revision: canary", IstiodOptions{Revision: "canary"}},
		{"trust domain", "trustDomain: example.org", IstiodOptions{TrustDomain: "example.org"}},
		{"non-root proxy", "proxyRunAsUser: 1337", IstiodOptions{}},
	} {
		t.Run(tc.name, func(t *testing.T) { runSidecarCase(t, tc.config, tc.istiod) })
	}
}

func runSidecarCase(t *testing.T, config string, istiodOpts IstiodOptions) {
	ctx, cancel := context.WithTimeout(context.Background(), caseTimeout)
	defer cancel()
	cfg := useConfig(t, config)
	dir := t.TempDir()
	istiod, err := StartIstiod(ctx, env, bin, filepath.Join(dir, "istiod"), istiodOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer istiod.Stop()

	ns := "ambassador-" + strings.ReplaceAll(t.Name()[strings.LastIndex(t.Name(), "/")+1:], "_", "-")
	d := applySeed(t, ns)
	pod := kubelet.PodFromTemplate(ns, d.Name+"-0", &d.Spec.Template)
	agent := startAgent(t, ctx, dir, pod, istiod)
	agent.checkCertificates(ctx, cfg.TrustDomain)
	agent.checkXDS(ctx)
	agent.checkFlagsRead()
}

// useConfig makes config (keys of the webhook's configuration) the webhook's for the test.
func useConfig(t *testing.T, config string) *inject.Config {
	t.Helper()
	cfg, err := inject.ParseConfig([]byte("apiVersion: " + inject.ConfigAPIVersion + "\nkind: " + inject.ConfigKind + "\n" + config))
	if err != nil {
		t.Fatal(err)
	}
	previous := env.Server.Config.Load()
	env.Server.Config.Store(cfg)
	t.Cleanup(func() { env.Server.Config.Store(previous) })
	return cfg
}

// agentRun is pilot-agent running as the istio-proxy container of a Pod, against istiod.
type agentRun struct {
	t         *testing.T
	pod       *corev1.Pod
	proxy     *corev1.Container
	istiod    *Istiod
	agent     *kubelet.Container
	log       *envtest.LockedBuffer
	statusDir string
}

// startAgent runs pod's istio-proxy container (or init container) as the kubelet would, as a
// real pilot-agent in a pod's view of the world (its volumes at their mountPaths, env as the
// kubelet resolves it, /etc/hosts for istiod's Service names, its own network namespace)
// against istiod, the only istiod whose Service name resolves.
func startAgent(t *testing.T, ctx context.Context, dir string, pod *corev1.Pod, istiod *Istiod) *agentRun {
	t.Helper()
	return startAgentRouted(t, ctx, dir, pod, istiod, map[string]*Istiod{istiod.Service(): istiod})
}

// startAgentRouted is startAgent in a cluster with several istiods: routes is its cluster DNS
// (a Service host name, e.g. istiod-canary.istio-system.svc, and the istiod behind it), and
// istiod the one the agent must be served by (checkXDS). Everything the agent dials is its
// rendered address verbatim: inside the pod's network namespace port 15012 of each Service
// name leads to its istiod's socket.
func startAgentRouted(t *testing.T, ctx context.Context, dir string, pod *corev1.Pod, istiod *Istiod, routes map[string]*Istiod) *agentRun {
	t.Helper()
	r := &agentRun{t: t, pod: pod, istiod: istiod, log: &envtest.LockedBuffer{}, statusDir: filepath.Join(dir, "status")}
	if r.proxy = podContainer(pod, inject.ProxyContainerName); r.proxy == nil {
		t.Fatalf("pod %s/%s has no %s container", pod.Namespace, pod.Name, inject.ProxyContainerName)
	}
	if err := os.MkdirAll(r.statusDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Cluster DNS, as far as this pod needs it: an address of the pod's loopback per Service,
	// forwarded to its istiod's socket.
	hosts := map[string]string{}
	var forwards []kubelet.Forward
	binds := []kubelet.Bind{{Source: r.statusDir, Target: "/run/status"}}
	for i, svc := range slices.Sorted(maps.Keys(routes)) {
		ip, mount := fmt.Sprintf("127.0.0.%d", 10+i), fmt.Sprintf("/run/istiod-%d", i)
		hosts[svc] = ip
		forwards = append(forwards, kubelet.Forward{Listen: "tcp:" + ip + ":15012", Dial: "unix:" + mount + "/grpcs.sock"})
		binds = append(binds, kubelet.Bind{Source: routes[svc].Dir, Target: mount})
	}
	if p := r.proxy.ReadinessProbe; p != nil && p.HTTPGet != nil {
		// The readiness probe's port, reachable from the test as a kubelet would probe it.
		forwards = append(forwards, kubelet.Forward{Listen: "unix:/run/status/probe.sock", Dial: "tcp:127.0.0.1:" + p.HTTPGet.Port.String()})
	}
	var err error
	r.agent, err = kubelet.Run(ctx, filepath.Join(dir, "pod"), pod, inject.ProxyContainerName, kubelet.Options{
		API:      kubernetes.NewForConfigOrDie(env.Config),
		Image:    proxyImage,
		Hosts:    hosts,
		Forwards: forwards,
		Binds:    binds,
		// No Envoy binary exists here; xdsprobe (checkXDS) stands in for it.
		ExtraEnv: []string{"DISABLE_ENVOY=true"},
		Out:      r.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.agent.Stop)
	return r
}

func (r *agentRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf(format+"\n--- pilot-agent:\n%s\n--- istiod:\n%s", append(args, tail(r.log.String(), 6000), r.istiod.Log(3000))...)
}

// checkCertificates: the agent gets certificates for the pod's identity in trustDomain from
// istiod, and writes them where the agent's OUTPUT_CERTS says and Emissary reads them (the
// volume the Emissary container mounts at AMBASSADOR_ISTIO_SECRET_DIR), readable by
// Emissary's user, chained to the root istiod publishes.
func (r *agentRun) checkCertificates(ctx context.Context, trustDomain string) {
	t := r.t
	t.Helper()
	certsDir := r.emissaryCertsDir()
	files := map[string][]byte{}
	for _, name := range []string{"key.pem", "cert-chain.pem", "root-cert.pem"} {
		err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
			if b, err := os.ReadFile(filepath.Join(certsDir, name)); err == nil && len(b) > 0 {
				files[name] = b
				return true, nil
			}
			if done, err := r.agent.Exited(); done {
				return false, fmt.Errorf("pilot-agent exited (%v) before writing %s", err, name)
			}
			return false, nil
		})
		if err != nil {
			r.fatalf("no %s in OUTPUT_CERTS: %v", name, err)
		}
		fi, err := os.Stat(filepath.Join(certsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		// Emissary runs as another user (8888 in the seed) than the proxy.
		if fi.Mode().Perm()&0o004 == 0 {
			t.Errorf("%s has mode %v: Emissary, running as another user, cannot read it", name, fi.Mode().Perm())
		}
	}
	leaf := parseCert(t, files["cert-chain.pem"])
	wantID := fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, r.pod.Namespace, r.pod.Spec.ServiceAccountName)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID {
		t.Errorf("certificate identity %v, want %s", leaf.URIs, wantID)
	}
	if got := r.agent.Env["TRUST_DOMAIN"]; got != trustDomain {
		t.Errorf("TRUST_DOMAIN is %q, want %q", got, trustDomain)
	}
	published := &corev1.ConfigMap{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: r.pod.Namespace, Name: "istio-ca-root-cert"}, published); err != nil {
		t.Fatal(err)
	}
	// The same certificate (the files differ in a trailing newline).
	if root := parseCert(t, files["root-cert.pem"]); !root.Equal(parseCert(t, []byte(published.Data["root-cert.pem"]))) {
		t.Error("root-cert.pem is not the root istiod publishes in istio-ca-root-cert")
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(files["root-cert.pem"])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
		t.Errorf("the certificate does not chain to root-cert.pem: %v", err)
	}
	keyBlock, _ := pem.Decode(files["key.pem"])
	if keyBlock == nil || !strings.Contains(keyBlock.Type, "PRIVATE KEY") {
		t.Errorf("key.pem holds no private key")
	}
	t.Logf("istiod %s: certificates for %s in the volume Emissary reads", r.istiod.Revision, wantID)
}

// checkXDS: Envoy's stand-in asks the agent for clusters; the agent forwards to the istiod
// its configuration names, which lists the connection. Then the stored readiness probe
// passes, as the kubelet runs it.
func (r *agentRun) checkXDS(ctx context.Context) {
	t := r.t
	t.Helper()
	ns := r.pod.Namespace
	node := fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", "127.0.0.1", r.pod.Name, ns, ns)
	meta, _ := json.Marshal(map[string]string{"NAMESPACE": ns, "CLUSTER_ID": r.agent.Env["ISTIO_META_CLUSTER_ID"],
		"ISTIO_VERSION": inject.DefaultIstioVersion, "MESH_ID": r.agent.Env["ISTIO_META_MESH_ID"]})
	probe := exec.CommandContext(ctx, filepath.Join(bin, "xdsprobe"),
		"-socket", filepath.Join(r.agent.VolumeDir(volumeMountedAt(t, r.proxy, "/etc/istio/proxy")), "XDS"),
		"-node", node, "-metadata", string(meta))
	hold, err := probe.StdinPipe() // the probe keeps its stream open until this is closed
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := probe.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	probeErr := &envtest.LockedBuffer{}
	probe.Stderr = probeErr
	if err := probe.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { hold.Close(); _ = probe.Wait() }()
	var answer struct {
		TypeURL   string `json:"typeUrl"`
		Resources int    `json:"resources"`
	}
	if err := json.NewDecoder(stdout).Decode(&answer); err != nil || answer.Resources == 0 {
		r.fatalf("no XDS answer through the agent (%v, %d clusters): %s", err, answer.Resources, probeErr)
	}
	conns, err := r.istiod.ConnectedProxies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A connection's ID is the proxy's ID (<pod>.<namespace>, from the node ID), "-", a number.
	if !hasPrefix(conns, r.pod.Name+"."+ns+"-") {
		t.Errorf("istiod %s lists connections %v, not the proxy %s", r.istiod.Revision, conns, node)
	}
	if p := r.proxy.ReadinessProbe; p != nil && p.HTTPGet != nil {
		if status := httpProbe(ctx, filepath.Join(r.statusDir, "probe.sock"), p.HTTPGet.Path); status != http.StatusOK {
			r.fatalf("readiness probe %s answered %d", p.HTTPGet.Path, status)
		}
	}
	t.Logf("istiod %s: %d clusters over XDS", r.istiod.Revision, answer.Resources)
}

// seedFile is the seed's Emissary Deployment as an operator applies it with the webhook.
var seedFile = filepath.Join(envtest.RepoRoot(), "test", "envtest", "testdata", "emissary-deployment.yaml")

// applySeed applies the seed's Emissary Deployment in a new namespace ns; see applyEmissary.
func applySeed(t *testing.T, ns string) *appsv1.Deployment {
	t.Helper()
	d, _ := applyEmissary(t, seedFile, ns, nil)
	return d
}

// applyEmissary applies the Deployment in file with kubectl, through the webhook, into
// namespace ns, created with labels nsLabels unless it exists, with the service account and the Secrets its pod uses
// (Emissary's own; an install makes them). It returns what the API server stored and
// kubectl's standard error (its warnings).
func applyEmissary(t *testing.T, file, ns string, nsLabels map[string]string) (*appsv1.Deployment, string) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := envtest.ParseObjects(raw)
	if err != nil || len(objs) != 1 || objs[0].GetKind() != "Deployment" {
		t.Fatalf("%s: want one Deployment (%v)", file, err)
	}
	objs[0].SetNamespace(ns)
	manifest, err := objs[0].MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	d := &appsv1.Deployment{}
	if err := json.Unmarshal(manifest, d); err != nil {
		t.Fatal(err)
	}
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: nsLabels}}
	if err := env.Client.Create(context.Background(), namespace); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	var prereqs [][]string
	if sa := d.Spec.Template.Spec.ServiceAccountName; sa != "" {
		prereqs = append(prereqs, []string{"-n", ns, "create", "serviceaccount", sa})
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			prereqs = append(prereqs, []string{"-n", ns, "create", "secret", "generic", v.Secret.SecretName})
		}
	}
	for _, args := range prereqs {
		if _, _, err := env.Kubectl(nil, args...); err != nil {
			t.Fatal(err)
		}
	}
	_, warnings, err := env.Kubectl(manifest, "apply", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(d), d); err != nil {
		t.Fatal(err)
	}
	return d, warnings
}

// volumeMountedAt names the volume c mounts at mountPath.
func volumeMountedAt(t *testing.T, c *corev1.Container, mountPath string) string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Clean(mountPath) {
			return m.Name
		}
	}
	t.Fatalf("container %s mounts nothing at %s", c.Name, mountPath)
	return ""
}

// checkFlagsRead: every flag the sidecar carries is one this pilot-agent reads: it logs each
// flag it knows at start ("FLAG: --domain=...") and silently drops the others. (Call it once
// the agent has started: after checkCertificates.)
func (r *agentRun) checkFlagsRead() {
	r.t.Helper()
	for _, a := range r.agent.Args {
		if name, ok := strings.CutPrefix(a, "--"); ok {
			name, _, _ = strings.Cut(name, "=")
			if !strings.Contains(r.log.String(), "FLAG: --"+name+"=") {
				r.t.Errorf("pilot-agent %s ignores the rendered flag --%s", inject.DefaultIstioVersion, name)
			}
		}
	}
}

// emissaryCertsDir is where the Emissary container (the one with AMBASSADOR_ISTIO_SECRET_DIR)
// reads certificates: the volume it mounts there. The agent's OUTPUT_CERTS must be a mount of
// the same volume.
func (r *agentRun) emissaryCertsDir() string {
	t := r.t
	t.Helper()
	var emissary *corev1.Container
	var secretDir string
	for i := range r.pod.Spec.Containers {
		for _, e := range r.pod.Spec.Containers[i].Env {
			if e.Name == "AMBASSADOR_ISTIO_SECRET_DIR" {
				emissary, secretDir = &r.pod.Spec.Containers[i], e.Value
			}
		}
	}
	if emissary == nil || secretDir == "" {
		t.Fatal("no container of the pod has AMBASSADOR_ISTIO_SECRET_DIR")
	}
	volume := volumeMountedAt(t, emissary, secretDir)
	if got := volumeMountedAt(t, r.proxy, r.agent.Env["OUTPUT_CERTS"]); got != volume {
		t.Fatalf("the proxy writes to volume %s, Emissary reads volume %s", got, volume)
	}
	return r.agent.VolumeDir(volume)
}

func parseCert(t *testing.T, chain []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(chain)
	if block == nil {
		t.Fatal("cert-chain.pem holds no PEM block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func hasPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// httpProbe GETs path through a Unix socket that leads to the probed port; 0 when it fails.
func httpProbe(ctx context.Context, socket, path string) int {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	status := 0
	_ = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://pod"+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			status = 0
			return false, nil
		}
		resp.Body.Close()
		status = resp.StatusCode
		return status == http.StatusOK, nil
	})
	return status
}

// proxyImage is Istio's proxyv2 image as far as this machine has it: its entrypoint,
// pilot-agent, built from the same release.
func proxyImage(ref string) (kubelet.Image, error) {
	if inject.ImageName(ref) != "proxyv2" {
		return kubelet.Image{}, fmt.Errorf("no image %s here", ref)
	}
	return kubelet.Image{
		Entrypoint: []string{"/usr/local/bin/pilot-agent"},
		Files:      map[string]string{"/usr/local/bin/pilot-agent": filepath.Join(bin, "pilot-agent")},
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	}, nil
}
