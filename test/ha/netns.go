// Package ha is the high-availability drill: two `webhook serve` processes (the real binary)
// behind the webhook's Service, reached by a real kube-apiserver through the Service's
// EndpointSlice, under a steady stream of `kubectl apply`, through a rolling restart and a
// SIGKILL.
//
// kube-apiserver refuses loopback addresses in EndpointSlices, so the whole drill runs in a
// network namespace of its own: the test binary re-executes itself there (see InNetns),
// where a veth pair carries the replicas' addresses from 192.0.2.0/24 (TEST-NET-1, never
// routed). Nothing is added to the host's interfaces.
package ha

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// netnsEnv marks the re-executed test binary, inside the network namespace.
const netnsEnv = "EMISSARY_ISTIO_HA_NETNS"

// APIServerAddress is what kube-apiserver advertises.
const APIServerAddress = "192.0.2.1"

// Link is the veth device inside the namespace that holds the replicas' addresses.
const Link = "ha0"

// InNetns runs the test binary again inside a new network namespace and returns its exit
// code; in that re-executed binary (and only there) it sets the namespace's network up and
// returns -1, telling TestMain to run the tests. Root is required (CI runs as root); without
// it the drill fails, it is never skipped.
func InNetns() int {
	if os.Getenv(netnsEnv) != "" {
		if err := setUpNetwork(); err != nil {
			fmt.Fprintln(os.Stderr, "ha: setting up the network namespace:", err)
			return 2
		}
		return -1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ha:", err)
		return 2
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	default:
		fmt.Fprintln(os.Stderr, "ha: the drill needs a network namespace of its own (run as root):", err)
		return 2
	}
}

// setUpNetwork brings loopback up (etcd and kube-apiserver listen there) and a veth pair
// whose end Link takes the replicas' addresses.
func setUpNetwork() error {
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", Link, "type", "veth", "peer", "name", Link + "-peer"},
		{"link", "set", Link, "up"},
		{"link", "set", Link + "-peer", "up"},
		// kube-apiserver's address (its --advertise-address): with no route out of the
		// namespace it finds none by itself.
		{"addr", "add", APIServerAddress + "/24", "dev", Link},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %w: %s", args, err, out)
		}
	}
	return nil
}

// AddAddress puts ip (a /32) on Link: a new pod's address.
func AddAddress(ip string) error {
	if out, err := exec.Command("ip", "addr", "add", ip+"/32", "dev", Link).CombinedOutput(); err != nil {
		return fmt.Errorf("ip addr add %s: %w: %s", ip, err, out)
	}
	return nil
}
