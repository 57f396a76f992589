// Command demo shows the whole job on an embedded control plane: it starts kube-apiserver
// and etcd, runs the webhook and registers it by URL, then drives the real kubectl the way
// an operator would — label default for Istio injection, apply the seed's Emissary
// Deployment and quote-backend Mapping — and prints what the cluster stored and what
// kubectl said. `make demo` runs it once; `make run` keeps it up for your own kubectl.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/mutate"
	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
)

func main() {
	keep := flag.Bool("keep-running", false, "keep the control plane and webhook up until interrupted")
	kubeconfigOut := flag.String("kubeconfig-out", "", "also write the admin kubeconfig here")
	verbose := flag.Bool("v", false, "show the webhook's log")
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.WriteTo(logSink(*verbose))))

	switch err := run(*keep, *kubeconfigOut); {
	case errors.Is(err, errInterrupted):
		os.Exit(130) // the shell's code for "ended by Ctrl-C"
	case err != nil:
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// errInterrupted: Ctrl-C before the demo finished; everything was stopped.
var errInterrupted = errors.New("interrupted")

func logSink(verbose bool) *os.File {
	if verbose {
		return os.Stderr
	}
	devnull, _ := os.Open(os.DevNull)
	return devnull
}

func run(keep bool, kubeconfigOut string) error {
	// Catch Ctrl-C (and SIGTERM) from the start and until everything is stopped: kube-apiserver
	// and etcd run in their own process group, so the terminal's SIGINT does not reach them,
	// and a demo killed by it would leave them running. Signals during the shutdown are
	// caught too, so pressing Ctrl-C again cannot cut it short.
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	step("Starting kube-apiserver and etcd, and the webhook on 127.0.0.1")
	env, err := envtest.Start(envtest.Options{})
	if err != nil {
		return err
	}
	defer func() {
		step("Stopping the webhook, kube-apiserver and etcd")
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: stopping:", err)
		}
		if kubeconfigOut != "" {
			_ = os.Remove(kubeconfigOut) // it points at a server that is gone
		}
		fmt.Println("   stopped")
	}()
	if ctx.Err() != nil {
		return errInterrupted
	}
	fmt.Printf("   webhook registered at %s (%s, %s, %s)\n", env.WebhookURL, mutate.DeploymentPath, mutate.PodPath, mutate.MappingPath)

	testdata := filepath.Join(envtest.RepoRoot(), "test", "envtest", "testdata")
	steps := []struct {
		title string
		args  []string
	}{
		{"Label namespace default for Istio injection", []string{"label", "namespace", "default", "istio-injection=enabled", "--overwrite"}},
		{"Create namespace ambassador", []string{"create", "namespace", "ambassador"}},
		{"Apply the seed's Emissary Deployment (no istio-proxy in it; this cluster runs no Istio, so the webhook says so and renders its defaults)", []string{"apply", "-f", filepath.Join(testdata, "seed-emissary.yaml")}},
		{"Apply the seed's quote-backend Mapping (no tls in it)", []string{"apply", "-f", filepath.Join(testdata, "quote-mapping.yaml")}},
		{"Apply the same Deployment again: nothing changes", []string{"apply", "-f", filepath.Join(testdata, "seed-emissary.yaml")}},
		{"What the cluster stored: the Deployment's pod template", []string{"get", "deployment", "ambassador", "-n", "ambassador", "-o", "jsonpath=" + deploymentSummary}},
		{"What the cluster stored: the Mapping", []string{"get", "mapping", "quote-backend", "-n", "default", "-o", "yaml"}},
	}
	for _, s := range steps {
		if ctx.Err() != nil {
			return errInterrupted
		}
		step(s.title)
		fmt.Printf("   $ kubectl %s\n", strings.Replace(strings.Join(s.args, " "), deploymentSummary, "'<the injected parts>'", 1))
		out, errOut, err := env.Kubectl(nil, s.args...)
		printIndented(errOut)
		printIndented(out)
		if ctx.Err() != nil {
			return errInterrupted // kubectl got the terminal's Ctrl-C too
		}
		if err != nil {
			return err
		}
	}

	if kubeconfigOut != "" {
		kc, err := os.ReadFile(env.Kubeconfig)
		if err != nil {
			return err
		}
		if err := os.WriteFile(kubeconfigOut, kc, 0o600); err != nil {
			return err
		}
	}
	if !keep {
		step("Done: the stored Deployment carries istio-proxy, and the Mapping tls: istio-upstream.")
		return nil
	}
	step("Running. Try: kubectl --kubeconfig " + kubeconfigOut + " get deployments -A   (Ctrl-C stops)")
	<-ctx.Done()
	return nil // stopping is how `make run` ends: not an error
}

// deploymentSummary is a kubectl jsonpath that prints the parts the webhook writes.
const deploymentSummary = `generation: {.metadata.generation}
status annotation: {.spec.template.metadata.annotations.emissary-istio\.io/status}
sidecar.istio.io/inject: {.spec.template.metadata.annotations.sidecar\.istio\.io/inject}
containers:
{range .spec.template.spec.containers[*]}  - {.name}: {.image}
{end}istio-proxy args: {.spec.template.spec.containers[?(@.name=="istio-proxy")].args}
aes env: {range .spec.template.spec.containers[0].env[*]}{.name} {end}
aes mounts: {range .spec.template.spec.containers[0].volumeMounts[*]}{.name}:{.mountPath} {end}
volumes: {range .spec.template.spec.volumes[*]}{.name} {end}
`

func step(s string) { fmt.Printf("\n== %s\n", s) }

func printIndented(s string) {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return
	}
	for _, line := range strings.Split(s, "\n") {
		fmt.Println("   " + line)
	}
}
