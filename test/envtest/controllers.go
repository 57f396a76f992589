package envtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ControllerManager is a real kube-controller-manager (built by `make envtest` from the same
// k8s.io/kubernetes release as kube-apiserver) running against an Env: with the deployment
// and replicaset controllers, an applied Deployment becomes a ReplicaSet and Pods, each Pod
// created through admission (every mutating webhook of the cluster) as in a cluster. No
// kubelet runs: the Pods stay Pending, which is all a test of what the API server stores needs.
type ControllerManager struct {
	cmd  *exec.Cmd
	out  *LockedBuffer
	done chan struct{}
	err  error
}

// StartControllerManager runs kube-controller-manager with the named controllers (e.g.
// "deployment", "replicaset", "serviceaccount") and e's admin credentials. It returns at once:
// the controllers act within a second or two, and a test waits, bounded, for what they make.
func (e *Env) StartControllerManager(controllers ...string) (*ControllerManager, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(assets, "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("envtest: %w; run `make envtest` (or `make test`, which builds it)", err)
	}
	m := &ControllerManager{out: &LockedBuffer{}, done: make(chan struct{})}
	m.cmd = exec.Command(bin,
		"--kubeconfig", e.Kubeconfig,
		"--controllers", strings.Join(controllers, ","),
		"--leader-elect=false",
		"--secure-port=0", // nothing here asks for its metrics or health
		"--concurrent-deployment-syncs=2", "--concurrent-replicaset-syncs=2",
	)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlives the tests
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("envtest: starting kube-controller-manager: %w", err)
	}
	go func() { m.err = m.cmd.Wait(); close(m.done) }()
	return m, nil
}

// Exited reports whether kube-controller-manager has ended (a bad flag ends it at once), and
// how, with the end of its log.
func (m *ControllerManager) Exited() error {
	select {
	case <-m.done:
		return fmt.Errorf("kube-controller-manager exited (%v):\n%s", m.err, m.Log(3000))
	default:
		return nil
	}
}

// Log is the end of its output, n bytes at most, for failure messages.
func (m *ControllerManager) Log(n int) string {
	s := m.out.String()
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// Stop ends it: SIGTERM, then SIGKILL after a few seconds.
func (m *ControllerManager) Stop() error {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	var exit *exec.ExitError
	if m.err != nil && !errors.As(m.err, &exit) {
		return m.err
	}
	return nil
}

// LockedBuffer is a bytes.Buffer that a process's output and a test may use at once.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
