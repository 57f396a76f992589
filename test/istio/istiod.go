// Package istio runs Istio's real control plane and sidecar agent, built from istio.io/istio by
// `make istio`, on the envtest control plane, and checks the sidecar the webhook injects
// against them: the real-Istio suite.
package istio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
	"github.com/emissary-istio/emissary-istio-webhook/test/kubelet"
)

// BinDir is where pilot-agent, pilot-discovery and xdsprobe are: $ISTIO_BIN as the Makefile
// sets it, else the newest bin/istio/<version>.
func BinDir() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"pilot-agent", "pilot-discovery", "xdsprobe"} {
			if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv("ISTIO_BIN"); dir != "" && has(dir) {
		return dir, nil
	}
	dirs, _ := filepath.Glob(filepath.Join(envtest.RepoRoot(), "bin", "istio", "*"))
	sort.Sort(sort.Reverse(sort.StringSlice(dirs))) // one version is built at a time
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", errors.New("istio: pilot-agent, pilot-discovery and xdsprobe not found; run `make istio` (or `make test`, which builds them)")
}

// Istiod is one istiod (pilot-discovery) running in a network namespace of its own, so it
// listens on its usual ports (15012 XDS and CA, 8080 HTTP) without taking any port of this
// machine. It reaches kube-apiserver, and is reached, through Unix sockets in Dir:
// grpcs.sock (15012) and http.sock (8080).
type Istiod struct {
	Revision string // "default" or a revision name
	Dir      string
	proc     *kubelet.Process
	log      *syncBuffer
	stops    []io.Closer
}

// Ports inside istiod's network namespace.
const (
	istiodGRPCS = "15012"
	istiodHTTP  = "8080"
)

// IstiodOptions configure one istiod.
type IstiodOptions struct {
	Revision    string // "" means default
	TrustDomain string // "" means cluster.local
}

// StartIstiod runs istiod as Istio's chart does in a cluster (its own CA, self-signed root,
// PILOT_CERT_PROVIDER=istiod), with env's admin kubeconfig, and waits until it is ready.
func StartIstiod(ctx context.Context, e *envtest.Env, bin, dir string, opts IstiodOptions) (*Istiod, error) {
	if opts.Revision == "" {
		opts.Revision = "default"
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	d := &Istiod{Revision: opts.Revision, Dir: dir, log: &syncBuffer{}}
	// Istio's chart installs into istio-system, where istiod keeps its CA (istio-ca-secret).
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}
	if err := e.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	mesh := filepath.Join(dir, "mesh")
	if err := os.WriteFile(mesh, []byte("trustDomain: "+opts.TrustDomain+"\nrootNamespace: istio-system\n"), 0o644); err != nil {
		return nil, err
	}
	// kube-apiserver listens on this machine's loopback: give istiod the same address in its
	// namespace, forwarded through a socket.
	api, err := url.Parse(e.Config.Host)
	if err != nil {
		return nil, err
	}
	apiSock := filepath.Join(dir, "apiserver.sock")
	l, err := kubelet.Forward{Listen: "unix:" + apiSock, Dial: "tcp:" + api.Host}.Start()
	if err != nil {
		return nil, err
	}
	d.stops = append(d.stops, l)
	name := "istiod-test"
	if opts.Revision != "default" {
		name = "istiod-" + opts.Revision + "-test"
	}
	d.proc, err = kubelet.Start(kubelet.Sandbox{
		Hostname: name,
		Argv: []string{filepath.Join(bin, "pilot-discovery"), "discovery",
			"--kubeconfig", e.Kubeconfig, "--meshConfig", mesh,
			"--clusterID", "Kubernetes", "--domain", "cluster.local"},
		Env: []string{"PATH=/usr/bin:/bin", "POD_NAMESPACE=istio-system", "POD_NAME=" + name,
			"REVISION=" + opts.Revision, "PILOT_CERT_PROVIDER=istiod", "JWT_POLICY=third-party-jwt",
			"CLUSTER_ID=Kubernetes", "KUBECONFIG=" + e.Kubeconfig},
		Dir: dir,
		Forwards: []kubelet.Forward{
			{Listen: "tcp:" + api.Host, Dial: "unix:" + apiSock},
			{Listen: "unix:" + d.Socket(istiodGRPCS), Dial: "tcp:127.0.0.1:" + istiodGRPCS},
			{Listen: "unix:" + d.Socket(istiodHTTP), Dial: "tcp:127.0.0.1:" + istiodHTTP},
		},
	}, d.log)
	if err != nil {
		d.Stop()
		return nil, err
	}
	for {
		if status, _, err := d.Get(ctx, "/ready"); err == nil && status == http.StatusOK {
			return d, nil
		}
		if done, err := d.proc.Exited(); done {
			return nil, fmt.Errorf("istiod %s exited (%v):\n%s", opts.Revision, err, d.Log(4000))
		}
		select {
		case <-ctx.Done():
			d.Stop()
			return nil, fmt.Errorf("istiod %s not ready: %w:\n%s", opts.Revision, ctx.Err(), d.Log(4000))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Socket is the Unix socket in Dir that reaches istiod's port.
func (d *Istiod) Socket(port string) string {
	return filepath.Join(d.Dir, map[string]string{istiodGRPCS: "grpcs.sock", istiodHTTP: "http.sock"}[port])
}

// Get asks istiod's HTTP port (readiness, debug endpoints).
func (d *Istiod) Get(ctx context.Context, path string) (int, []byte, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.Socket(istiodHTTP))
	}}}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://istiod"+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// ConnectedProxies are the connections of istiod's XDS server, from its debug endpoint: each
// is the proxy's node ID, "-", a connection number.
func (d *Istiod) ConnectedProxies(ctx context.Context) ([]string, error) {
	status, body, err := d.Get(ctx, "/debug/connections")
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("istiod /debug/connections: %d %s", status, body)
	}
	var conns struct {
		Connected []struct {
			ConnectionID string `json:"connectionId"`
		} `json:"clients"`
	}
	if err := json.Unmarshal(body, &conns); err != nil {
		return nil, fmt.Errorf("istiod /debug/connections: %w: %s", err, body)
	}
	var ids []string
	for _, c := range conns.Connected {
		ids = append(ids, c.ConnectionID)
	}
	return ids, nil
}

// Log is the end of istiod's output, for failure messages.
func (d *Istiod) Log(n int) string { return tail(d.log.String(), n) }

// Stop ends istiod and its forwards.
func (d *Istiod) Stop() {
	if d.proc != nil {
		d.proc.Stop()
	}
	for _, c := range d.stops {
		_ = c.Close()
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
