// Package kubelet gives a process a pod's view of the world without containers (they cannot
// run on this machine): its own mount, network and UTS namespaces, the pod's volumes
// bind-mounted at their mountPaths under a root it is chrooted into, an /etc/hosts of the
// test's choosing, and TCP ports inside its network namespace forwarded over Unix sockets to
// servers outside it. Run turns a container of a Pod the API server stored into such a
// process, as the kubelet would: volumes from the API (ConfigMaps, TokenRequest tokens,
// downward API), env with fieldRefs resolved, $(VAR) expansion in args.
//
// The sandbox is the test binary itself, run again with KUBELET_SANDBOX set: a test package
// that uses this package calls MaybeRunSandbox first thing in its TestMain. It needs root
// (which `make test` has: see CONTRIBUTING.md).
package kubelet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sandboxEnv names the file holding the Sandbox a re-run test binary must set up.
const sandboxEnv = "KUBELET_SANDBOX"

// Sandbox is what the re-run test binary sets up before it starts Argv.
type Sandbox struct {
	// Root, when set, is chrooted into after the Binds: a directory prepared by the caller
	// with a mount point for every Bind target.
	Root string `json:"root,omitempty"`
	// Binds are bind mounts, targets relative to Root (or absolute in the host's tree when
	// Root is empty).
	Binds []Bind `json:"binds,omitempty"`
	// Forwards run inside the network namespace for as long as the process does.
	Forwards []Forward `json:"forwards,omitempty"`
	// Hostname of the UTS namespace (a pod's is its name).
	Hostname string `json:"hostname,omitempty"`
	// The process: argv, environment, working directory (inside Root) and user.
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Dir  string   `json:"dir,omitempty"`
	UID  *uint32  `json:"uid,omitempty"`
	GID  *uint32  `json:"gid,omitempty"`
}

// Bind mounts Source (a path in the host's tree) at Target.
type Bind struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Process is a running sandbox.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs sb in new namespaces. Its output and its process's go to out. The sandbox is
// killed when the test process dies.
func Start(sb Sandbox, out io.Writer) (*Process, error) {
	spec, err := os.CreateTemp("", "kubelet-sandbox-*.json")
	if err != nil {
		return nil, err
	}
	defer os.Remove(spec.Name()) // read before the process reports ready (see MaybeRunSandbox)
	if err := json.NewEncoder(spec).Encode(sb); err != nil {
		spec.Close()
		return nil, err
	}
	spec.Close()
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ready, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer ready.Close()
	cmd := exec.Command(self)
	cmd.Env = []string{sandboxEnv + "=" + spec.Name()}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{readyW} // fd 3: closed once the sandbox is set up
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS,
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		readyW.Close()
		return nil, fmt.Errorf("kubelet: starting the sandbox: %w", err)
	}
	readyW.Close()
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	// The sandbox writes one line: "ok", or why it could not set itself up.
	msg, _ := io.ReadAll(io.LimitReader(ready, 4096))
	if string(msg) != "ok" {
		p.Stop()
		return nil, fmt.Errorf("kubelet: setting up the sandbox: %s", msg)
	}
	return p, nil
}

// Stop sends SIGTERM, as the kubelet does, then SIGKILL after a few seconds, and waits.
func (p *Process) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// MaybeRunSandbox turns a re-run test binary into the sandbox and never returns; in the test
// process itself it does nothing. Call it first in TestMain.
func MaybeRunSandbox() {
	path := os.Getenv(sandboxEnv)
	if path == "" {
		return
	}
	// fd 3 reports readiness; the process started below must not inherit it, or the test
	// would wait for its end instead of the report.
	unix.CloseOnExec(3)
	ready := os.NewFile(3, "ready")
	var sb Sandbox
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &sb)
	}
	if err == nil {
		err = sb.setUp()
	}
	if err != nil {
		fmt.Fprint(ready, err.Error())
		os.Exit(2)
	}
	os.Exit(sb.run(ready))
}

// setUp runs in the new namespaces, before anything else of the process.
func (sb *Sandbox) setUp() error {
	// Mounts made here must not propagate back to the host's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return err
	}
	if sb.Hostname != "" {
		if err := unix.Sethostname([]byte(sb.Hostname)); err != nil {
			return fmt.Errorf("hostname: %w", err)
		}
	}
	// Parents before children (a volume mounted inside another, as Istio's
	// /var/run/secrets/istio/crl inside /var/run/secrets/istio), each mount point made in the
	// tree as mounted so far, as container runtimes do; read-only ones made so afterwards, so
	// that a child's mount point can still be made inside a read-only parent.
	binds := slices.Clone(sb.Binds)
	slices.SortStableFunc(binds, func(a, b Bind) int {
		return strings.Count(filepath.Clean(a.Target), "/") - strings.Count(filepath.Clean(b.Target), "/")
	})
	for _, b := range binds {
		target := filepath.Join(sb.Root, b.Target)
		if err := mountPoint(b.Source, target); err != nil {
			return err
		}
		if err := unix.Mount(b.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mounting %s at %s: %w", b.Source, b.Target, err)
		}
	}
	for _, b := range binds {
		if b.ReadOnly {
			if err := unix.Mount("", filepath.Join(sb.Root, b.Target), "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("making %s read-only: %w", b.Target, err)
			}
		}
	}
	if sb.Root != "" {
		if err := unix.Mount("proc", filepath.Join(sb.Root, "proc"), "proc", 0, ""); err != nil {
			return fmt.Errorf("mounting /proc: %w", err)
		}
		if err := unix.Mount("tmpfs", filepath.Join(sb.Root, "tmp"), "tmpfs", 0, "mode=1777"); err != nil {
			return fmt.Errorf("mounting /tmp: %w", err)
		}
		if err := unix.Chroot(sb.Root); err != nil {
			return fmt.Errorf("chroot: %w", err)
		}
		if err := os.Chdir("/"); err != nil {
			return err
		}
	}
	for _, f := range sb.Forwards {
		if _, err := f.Start(); err != nil {
			return err
		}
	}
	return nil
}

// run starts the process, reports readiness, passes SIGTERM on and returns its exit code.
func (sb *Sandbox) run(ready *os.File) int {
	cmd := exec.Command(sb.Argv[0], sb.Argv[1:]...)
	cmd.Env, cmd.Dir = sb.Env, sb.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if sb.UID != nil || sb.GID != nil {
		cred := &syscall.Credential{}
		if sb.UID != nil {
			cred.Uid = *sb.UID
		}
		if sb.GID != nil {
			cred.Gid = *sb.GID
		}
		cmd.SysProcAttr.Credential = cred
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(ready, "starting %s: %v", sb.Argv[0], err)
		return 2
	}
	fmt.Fprint(ready, "ok")
	ready.Close()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range signals {
			_ = cmd.Process.Signal(s)
		}
	}()
	err := cmd.Wait()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return exit.ExitCode()
	default:
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		return 1
	}
}

// loopbackUp brings up lo, which a new network namespace starts with down.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("reading lo's flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	return nil
}

// mountPoint creates what source is mounted over at target: a directory, or an empty file for
// a file.
func mountPoint(source, target string) error {
	fi, err := os.Stat(source)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return os.MkdirAll(target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}
