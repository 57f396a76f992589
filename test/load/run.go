package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mutate"
	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
)

// Results is everything the phases measured; test/benchreport reads it as JSON.
type Results struct {
	Load  []LoadRun      `json:"load,omitempty"`
	E2E   *E2EResult     `json:"e2e,omitempty"`
	Scale *ScaleResult   `json:"scale,omitempty"`
	RSS   map[string]RSS `json:"rss"` // by process: webhook, floor
}

// RSS is a process's memory from /proc/PID/status, in KiB.
type RSS struct {
	PeakKiB    int64 `json:"peakKiB"`    // VmHWM: the peak resident set
	CurrentKiB int64 `json:"currentKiB"` // VmRSS when read
}

// server is a started process serving admission reviews over HTTPS.
type server struct {
	name   string
	cmd    *exec.Cmd
	base   string // https://127.0.0.1:PORT
	log    string // its stdout and stderr
	exited chan struct{}
}

func run(o options) (*Results, error) {
	dir, err := os.MkdirTemp("", "emissary-istio-load-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	step("starting kube-apiserver and etcd")
	env, err := envtest.Start(envtest.Options{NoWebhook: true})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}()
	// Mappings in namespace default are meshed (the load phase's Mapping review).
	if err := labelNamespace(env.Client, "default", map[string]string{"istio-injection": "enabled"}); err != nil {
		return nil, err
	}

	bin := o.webhook
	if bin == "" {
		step("building ./cmd/webhook")
		bin = filepath.Join(dir, "webhook")
		build := exec.Command("go", "build", "-o", bin, "./cmd/webhook")
		build.Dir, build.Stdout, build.Stderr = envtest.RepoRoot(), os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			return nil, fmt.Errorf("building the webhook: %w", err)
		}
	}
	bundle, err := certs.Generate(certs.Options{Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		return nil, err
	}
	certDir := filepath.Join(dir, "certs")
	if err := bundle.WriteDir(certDir); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle.CACert)
	tlsConfig := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}

	step("starting `webhook serve` and the floor server")
	hook, err := startWebhook(bin, dir, certDir, env.Kubeconfig)
	if err != nil {
		return nil, err
	}
	defer hook.stop()
	floor, err := startFloor(dir, certDir)
	if err != nil {
		return nil, err
	}
	defer floor.stop()
	for _, s := range []*server{hook, floor} {
		if err := s.waitServing(tlsConfig, 60*time.Second); err != nil {
			return nil, err
		}
	}

	res := &Results{RSS: map[string]RSS{}}
	recordRSS := func() {
		for _, s := range []*server{hook, floor} {
			if r, err := readRSS(s.cmd.Process.Pid); err == nil {
				res.RSS[s.name] = r
			}
		}
	}
	var errs []error
	if o.phases["load"] {
		step("load phase")
		res.Load, err = loadPhase(o, tlsConfig, hook, floor)
		errs = append(errs, err)
	}
	if o.phases["e2e"] {
		step("e2e phase")
		res.E2E, err = e2ePhase(o, env, hook.base, floor.base, bundle.CACert)
		errs = append(errs, err)
	}
	if o.phases["scale"] {
		step("scale phase")
		res.Scale, err = scalePhase(o, env, tlsConfig, hook, floor)
		errs = append(errs, err)
	}
	recordRSS()
	return res, errors.Join(errs...)
}

func step(msg string) { fmt.Fprintf(os.Stderr, ">> %s %s\n", time.Now().Format("15:04:05"), msg) }

func startWebhook(bin, dir, certDir, kubeconfig string) (*server, error) {
	port, err := envtest.FreePort()
	if err != nil {
		return nil, err
	}
	health, err := envtest.FreePort()
	if err != nil {
		return nil, err
	}
	s := &server{name: "webhook", base: "https://127.0.0.1:" + strconv.Itoa(port), log: filepath.Join(dir, "webhook.log")}
	s.cmd = exec.Command(bin, "serve", "--host", "127.0.0.1", "--port", strconv.Itoa(port), "--cert-dir", certDir,
		"--metrics-bind-address", "0", "--health-probe-bind-address", "127.0.0.1:"+strconv.Itoa(health))
	s.cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	if err := s.start(); err != nil {
		return nil, err
	}
	// Ready means the namespace cache has synced, which the Mapping reviews depend on.
	ready := "http://127.0.0.1:" + strconv.Itoa(health) + "/readyz"
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) || s.hasExited() {
			s.stop()
			return nil, fmt.Errorf("webhook serve not ready: %v\n%s", err, s.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startFloor runs this program again as the floor server (serveFloor), so that it is a
// process of its own like `webhook serve`.
func startFloor(dir, certDir string) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := envtest.FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s := &server{name: "floor", base: "https://" + addr, log: filepath.Join(dir, "floor.log")}
	s.cmd = exec.Command(self, "-floor-serve", addr, "-floor-cert-dir", certDir)
	return s, s.start()
}

func (s *server) start() error {
	f, err := os.Create(s.log)
	if err != nil {
		return err
	}
	s.cmd.Stdout, s.cmd.Stderr = f, f
	if err := s.cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", s.name, err)
	}
	s.exited = make(chan struct{})
	go func() { _ = s.cmd.Wait(); f.Close(); close(s.exited) }()
	return nil
}

func (s *server) hasExited() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// waitServing returns once the server answers a review.
func (s *server) waitServing(tlsConfig *tls.Config, timeout time.Duration) error {
	c := newClient(tlsConfig, 1)
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Post(s.base+mutate.MappingPath, "application/json", strings.NewReader("{}"))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not serving on %s: %v\n%s", s.name, s.base, err, s.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop asks the server to shut down (SIGINT) and kills it if it has not within 5s.
func (s *server) stop() {
	if s.exited == nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// tail is the end of the server's log, for error messages.
func (s *server) tail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func readRSS(pid int) (RSS, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return RSS{}, err
	}
	defer f.Close()
	var r RSS
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmHWM:":
			r.PeakKiB = v
		case "VmRSS:":
			r.CurrentKiB = v
		}
	}
	return r, sc.Err()
}

func labelNamespace(c client.Client, name string, labels map[string]string) error {
	ctx := context.Background()
	ns := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
		return err
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	for k, v := range labels {
		ns.Labels[k] = v
	}
	return c.Update(ctx, ns)
}

func createNamespace(ctx context.Context, c client.Client, name string, labels, annotations map[string]string) error {
	return c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations}})
}

// print writes the results as a table: each webhook run next to the floor run of the same
// workload and concurrency.
func (r *Results) print(w io.Writer) {
	if len(r.Load) > 0 {
		fmt.Fprintf(w, "\n%-26s %4s %12s %12s %7s %9s %9s %6s\n", "workload", "c", "webhook/s", "floor/s", "ratio", "p50 ms", "p99 ms", "errors")
		for _, h := range r.Load {
			if h.Server != "webhook" {
				continue
			}
			f := r.floorOf(h)
			fmt.Fprintf(w, "%-26s %4d %12.0f %12.0f %6.0f%% %9.2f %9.2f %6d\n", h.Workload, h.Concurrency,
				h.PerSecond, f.PerSecond, 100*h.PerSecond/f.PerSecond, h.P50ms, h.P99ms, h.Errors+f.Errors)
		}
	}
	for name, rss := range r.RSS {
		fmt.Fprintf(w, "%s peak RSS %.1f MiB\n", name, mib(rss.PeakKiB))
	}
}

// floorOf is the floor run matching h.
func (r *Results) floorOf(h LoadRun) LoadRun {
	for _, f := range r.Load {
		if f.Server == "floor" && f.Workload == h.Workload && f.Concurrency == h.Concurrency {
			return f
		}
	}
	return LoadRun{}
}
