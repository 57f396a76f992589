package ha

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Replica is one `webhook serve` process: a pod with its own address.
type Replica struct {
	Name string
	IP   string
	// HealthURL is its /readyz, what the kubelet's readiness probe GETs.
	HealthURL string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  *os.File
}

// StartReplica runs bin (bin/webhook) as `serve` on ip:WebhookPort with the certificate in
// certDir, against the API server of kubeconfig, with extraArgs (the chart's shutdown flags).
// Its log goes to logDir/<name>.log.
func StartReplica(bin, name, ip, certDir, kubeconfig, logDir string, extraArgs ...string) (*Replica, error) {
	if err := AddAddress(ip); err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	args := append([]string{"serve",
		"--host=" + ip, "--port=" + strconv.Itoa(WebhookPort), "--cert-dir=" + certDir,
		"--metrics-bind-address=0", "--health-probe-bind-address=" + ip + ":" + strconv.Itoa(HealthPort),
	}, extraArgs...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("starting replica %s: %w", name, err)
	}
	r := &Replica{Name: name, IP: ip, cmd: cmd, done: make(chan struct{}), log: log,
		HealthURL: "http://" + ip + ":" + strconv.Itoa(HealthPort) + "/readyz"}
	go func() { r.err = cmd.Wait(); log.Close(); close(r.done) }()
	return r, nil
}

// Ports every replica listens on, each on its own address (the chart's container ports).
const (
	WebhookPort = 9443
	HealthPort  = 8081
)

// Terminate is the kubelet's stop of the container after its preStop hook: SIGTERM, then
// SIGKILL once grace has passed. It returns how long the process took to exit, and an error
// when it had to be killed or exited with an error.
func (r *Replica) Terminate(grace time.Duration) (time.Duration, error) {
	start := time.Now()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, err
	}
	select {
	case <-r.done:
		if r.err != nil {
			return time.Since(start), fmt.Errorf("replica %s exited after SIGTERM with %v (log: %s)", r.Name, r.err, r.log.Name())
		}
		return time.Since(start), nil
	case <-time.After(grace):
		_ = r.cmd.Process.Kill()
		<-r.done
		return time.Since(start), fmt.Errorf("replica %s still running %s after SIGTERM: killed (log: %s)", r.Name, grace, r.log.Name())
	}
}

// Kill is a crash: SIGKILL, no shutdown sequence.
func (r *Replica) Kill() {
	_ = r.cmd.Process.Kill()
	<-r.done
}

// Exited is closed when the process has ended.
func (r *Replica) Exited() <-chan struct{} { return r.done }
