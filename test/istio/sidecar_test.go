package istio

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
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
	cfg, err := inject.ParseConfig([]byte("apiVersion: " + inject.ConfigAPIVersion + "\nkind: " + inject.ConfigKind + "\n" + config))
	if err != nil {
		t.Fatal(err)
	}
	previous := env.Server.Config.Load()
	env.Server.Config.Store(cfg)
	t.Cleanup(func() { env.Server.Config.Store(previous) })

	dir := t.TempDir()
	istiod, err := StartIstiod(ctx, env, bin, filepath.Join(dir, "istiod"), istiodOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer istiod.Stop()

	ns := "ambassador-" + strings.ReplaceAll(t.Name()[strings.LastIndex(t.Name(), "/")+1:], "_", "-")
	d := applySeed(t, ns)
	proxy := storedContainer(t, d, inject.ProxyContainerName)
	pod := kubelet.PodFromTemplate(ns, d.Name+"-0", &d.Spec.Template)

	// Cluster DNS, as far as this pod needs it: the istiod Service that exists. Everything the
	// agent dials is its rendered address verbatim; inside the pod's network namespace port
	// 15012 of that name leads to istiod's socket.
	svc := "istiod." + "istio-system.svc"
	if istiodOpts.Revision != "" {
		svc = "istiod-" + istiodOpts.Revision + ".istio-system.svc"
	}
	statusDir := filepath.Join(dir, "status")
	if err := os.MkdirAll(statusDir, 0o755); err != nil {
		t.Fatal(err)
	}
	log := &syncBuffer{}
	agent, err := kubelet.Run(ctx, filepath.Join(dir, "pod"), pod, inject.ProxyContainerName, kubelet.Options{
		API:   kubernetes.NewForConfigOrDie(env.Config),
		Image: proxyImage,
		Hosts: map[string]string{svc: "127.0.0.10"},
		Forwards: []kubelet.Forward{
			{Listen: "tcp:127.0.0.10:15012", Dial: "unix:/run/istiod/grpcs.sock"},
			// The readiness probe's port, reachable from the test as a kubelet would probe it.
			{Listen: "unix:/run/status/probe.sock", Dial: "tcp:127.0.0.1:" + proxy.ReadinessProbe.HTTPGet.Port.String()},
		},
		Binds: []kubelet.Bind{{Source: istiod.Dir, Target: "/run/istiod"}, {Source: statusDir, Target: "/run/status"}},
		// No Envoy binary exists here; xdsprobe below stands in for it.
		ExtraEnv: []string{"DISABLE_ENVOY=true"},
		Out:      log,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Stop()
	failf := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\n--- pilot-agent:\n%s\n--- istiod:\n%s", append(args, tail(log.String(), 6000), istiod.Log(3000))...)
	}

	// The certificates, where the agent's OUTPUT_CERTS says and Emissary reads them: the volume
	// the Emissary container mounts at AMBASSADOR_ISTIO_SECRET_DIR.
	certsDir := emissaryCertsDir(t, d, agent)
	files := map[string][]byte{}
	for _, name := range []string{"key.pem", "cert-chain.pem", "root-cert.pem"} {
		for files[name] == nil {
			if b, err := os.ReadFile(filepath.Join(certsDir, name)); err == nil && len(b) > 0 {
				files[name] = b
				continue
			}
			if done, err := agent.Exited(); done {
				failf("pilot-agent exited (%v) before writing %s", err, name)
			}
			select {
			case <-ctx.Done():
				failf("no %s in OUTPUT_CERTS within %s", name, caseTimeout)
			case <-time.After(100 * time.Millisecond):
			}
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
	wantID := fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", cfg.TrustDomain, ns, pod.Spec.ServiceAccountName)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID {
		t.Errorf("certificate identity %v, want %s", leaf.URIs, wantID)
	}
	if got := agent.Env["TRUST_DOMAIN"]; got != cfg.TrustDomain {
		t.Errorf("TRUST_DOMAIN is %q, want %q", got, cfg.TrustDomain)
	}
	published := &corev1.ConfigMap{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "istio-ca-root-cert"}, published); err != nil {
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

	// XDS: Envoy's stand-in asks the agent for clusters; the agent forwards to the istiod its
	// configuration names, which lists the connection.
	node := fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", "127.0.0.1", pod.Name, ns, ns)
	meta, _ := json.Marshal(map[string]string{"NAMESPACE": ns, "CLUSTER_ID": agent.Env["ISTIO_META_CLUSTER_ID"],
		"ISTIO_VERSION": inject.DefaultIstioVersion, "MESH_ID": agent.Env["ISTIO_META_MESH_ID"]})
	probe := exec.CommandContext(ctx, filepath.Join(bin, "xdsprobe"),
		"-socket", filepath.Join(agent.VolumeDir(volumeMountedAt(t, proxy, "/etc/istio/proxy")), "XDS"),
		"-node", node, "-metadata", string(meta))
	hold, err := probe.StdinPipe() // the probe keeps its stream open until this is closed
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := probe.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	probeErr := &syncBuffer{}
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
		failf("no XDS answer through the agent (%v, %d clusters): %s", err, answer.Resources, probeErr)
	}
	conns, err := istiod.ConnectedProxies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A connection's ID is the proxy's ID (<pod>.<namespace>, from the node ID), "-", a number.
	if !hasPrefix(conns, pod.Name+"."+ns+"-") {
		t.Errorf("istiod %s lists connections %v, not the proxy %s", istiod.Revision, conns, node)
	}

	// Every flag the sidecar carries is one this pilot-agent reads: it logs each flag it knows
	// at start ("FLAG: --domain=...") and silently drops the others.
	for _, a := range agent.Args {
		if name, ok := strings.CutPrefix(a, "--"); ok {
			name, _, _ = strings.Cut(name, "=")
			if !strings.Contains(log.String(), "FLAG: --"+name+"=") {
				t.Errorf("pilot-agent %s ignores the rendered flag --%s", inject.DefaultIstioVersion, name)
			}
		}
	}

	// The stored readiness probe, as the kubelet runs it.
	if status := httpProbe(ctx, filepath.Join(statusDir, "probe.sock"), proxy.ReadinessProbe.HTTPGet.Path); status != http.StatusOK {
		failf("readiness probe %s answered %d", proxy.ReadinessProbe.HTTPGet.Path, status)
	}
	t.Logf("istiod %s: certificates for %s and %d clusters over XDS", istiod.Revision, wantID, answer.Resources)
}

// applySeed applies the seed's Emissary Deployment with kubectl, in namespace ns with its
// service account and the Secret its pod mounts (Emissary's own; an install makes it),
// through the webhook, and returns what the API server stored.
func applySeed(t *testing.T, ns string) *appsv1.Deployment {
	t.Helper()
	seed, err := os.ReadFile(filepath.Join(envtest.RepoRoot(), "test", "envtest", "testdata", "seed-emissary.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	manifest := strings.Replace(string(seed), "namespace: ambassador", "namespace: "+ns, 1)
	for _, args := range [][]string{
		{"create", "namespace", ns},
		{"-n", ns, "create", "serviceaccount", "ambassador"},
		{"-n", ns, "create", "secret", "generic", "ambassador-edge-stack"},
	} {
		if _, _, err := env.Kubectl(nil, args...); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := env.Kubectl([]byte(manifest), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	d := &appsv1.Deployment{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "ambassador"}, d); err != nil {
		t.Fatal(err)
	}
	return d
}

func storedContainer(t *testing.T, d *appsv1.Deployment, name string) *corev1.Container {
	t.Helper()
	for i := range d.Spec.Template.Spec.Containers {
		if c := &d.Spec.Template.Spec.Containers[i]; c.Name == name {
			return c
		}
	}
	t.Fatalf("the stored Deployment has no container %s", name)
	return nil
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

// emissaryCertsDir is where the Emissary container reads certificates (the volume it mounts at
// its AMBASSADOR_ISTIO_SECRET_DIR) and checks that the agent writes there (its OUTPUT_CERTS is
// a mount of the same volume).
func emissaryCertsDir(t *testing.T, d *appsv1.Deployment, agent *kubelet.Container) string {
	t.Helper()
	st, err := inject.ParseStatus(&d.Spec.Template)
	if err != nil || st == nil {
		t.Fatalf("stored Deployment has no injection status: %v", err)
	}
	emissary := storedContainer(t, d, st.EmissaryContainer)
	var secretDir string
	for _, e := range emissary.Env {
		if e.Name == "AMBASSADOR_ISTIO_SECRET_DIR" {
			secretDir = e.Value
		}
	}
	if secretDir == "" {
		t.Fatalf("container %s has no AMBASSADOR_ISTIO_SECRET_DIR", emissary.Name)
	}
	volume := volumeMountedAt(t, emissary, secretDir)
	proxy := storedContainer(t, d, inject.ProxyContainerName)
	if got := volumeMountedAt(t, proxy, agent.Env["OUTPUT_CERTS"]); got != volume {
		t.Fatalf("the proxy writes to volume %s, Emissary reads volume %s", got, volume)
	}
	return agent.VolumeDir(volume)
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
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://pod"+path, nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return resp.StatusCode
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return 0
			}
			return resp.StatusCode
		case <-time.After(200 * time.Millisecond):
		}
	}
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
