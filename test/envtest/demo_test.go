package envtest

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// TestDemoStopsOnCtrlC runs what `make run` runs (hack/demo --keep-running) and presses
// Ctrl-C the way a terminal does: SIGINT to the whole foreground process group. The demo must
// have shown the injected Deployment and the defaulted Mapping, then stop the control plane
// it started (whose processes are in a group of their own, out of the signal's reach), remove
// the kubeconfig it wrote, and exit 0.
func TestDemoStopsOnCtrlC(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-o", bin, filepath.Join(RepoRoot(), "hack", "demo")).CombinedOutput(); err != nil {
		t.Fatalf("building hack/demo: %v\n%s", err, out)
	}
	kubeconfig := filepath.Join(t.TempDir(), "dev.kubeconfig")
	cmd := exec.Command(bin, "--keep-running", "--kubeconfig-out", kubeconfig)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its own group, as a shell job
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr LockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var output LockedBuffer
	running := make(chan struct{})
	go func() {
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			output.Write([]byte(scanner.Text() + "\n"))
			if strings.HasPrefix(scanner.Text(), "== Running.") {
				close(running)
			}
		}
		exited <- cmd.Wait()
	}()
	defer func() {
		if t.Failed() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Logf("demo output:\n%s\nstderr:\n%s", output.String(), stderr.String())
		}
	}()

	select {
	case <-running:
	case err := <-exited:
		t.Fatalf("the demo exited before running: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the demo did not reach Running within 2 minutes")
	}
	for _, want := range []string{"istio-proxy: docker.io/istio/proxyv2:", "tls: istio-upstream", "service: quote:80"} {
		if !strings.Contains(output.String(), want) {
			t.Errorf("the demo did not show %q", want)
		}
	}
	// What it printed speaks to its users (TestUserFacingWords checks its source).
	for _, f := range insiderWordsIn("make demo's output", output.String()) {
		t.Error(f)
	}
	apiserver := serverAddress(t, kubeconfig)
	if conn, err := net.DialTimeout("tcp", apiserver, time.Second); err != nil {
		t.Fatalf("the demo's API server at %s is not up: %v", apiserver, err)
	} else {
		conn.Close()
	}

	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("after Ctrl-C the demo exited with %v, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the demo did not stop within 30s of Ctrl-C")
	}
	if _, err := os.Stat(kubeconfig); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the demo left %s behind (%v)", kubeconfig, err)
	}
	if conn, err := net.DialTimeout("tcp", apiserver, time.Second); err == nil {
		conn.Close()
		t.Errorf("the demo's API server at %s still accepts connections", apiserver)
	}
}

// serverAddress is host:port of the API server a kubeconfig points at.
func serverAddress(t *testing.T, kubeconfig string) string {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(cfg.Host, "https://")
}
