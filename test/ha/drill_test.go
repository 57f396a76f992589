package ha

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
)

const (
	webhookNamespace = "emissary-istio-system"
	serviceName      = "emissary-istio-webhook"
	workNamespace    = "ha" // meshed: its Mappings are defaulted
)

// chartShutdown is what the chart's Deployment sets for handing over: the readiness probe,
// the preStop sleep, the grace period and the server's shutdown flags.
type chartShutdown struct {
	Probe   Probe
	PreStop time.Duration
	Grace   time.Duration
	Args    []string
}

// releaseName makes the chart's names those of manifests/base (emissary-istio-webhook).
const releaseName = serviceName

// renderChart renders the chart, with its default values, with the real helm.
func renderChart(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	out, err := envtest.Helm(t.TempDir(), nil, "template", releaseName,
		filepath.Join(envtest.RepoRoot(), "charts", "emissary-istio-webhook"), "--namespace", webhookNamespace)
	if err != nil {
		t.Fatal(err)
	}
	objects, err := envtest.ParseObjects([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	return objects
}

// renderedShutdown reads the shutdown settings of the chart's Deployment.
func renderedShutdown(t *testing.T, objects []*unstructured.Unstructured) chartShutdown {
	t.Helper()
	for _, u := range objects {
		if u.GetKind() != "Deployment" {
			continue
		}
		d := &appsv1.Deployment{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, d); err != nil {
			t.Fatal(err)
		}
		spec := d.Spec.Template.Spec
		c := spec.Containers[0]
		rp, life := c.ReadinessProbe, c.Lifecycle
		if rp == nil || life == nil || life.PreStop == nil || life.PreStop.Sleep == nil || spec.TerminationGracePeriodSeconds == nil {
			t.Fatalf("the chart's Deployment has no readiness probe, preStop sleep or grace period: %+v", c)
		}
		s := chartShutdown{
			Probe: Probe{
				Period:           time.Duration(rp.PeriodSeconds) * time.Second,
				Timeout:          time.Duration(max(rp.TimeoutSeconds, 1)) * time.Second, // the kubelet's default: 1
				FailureThreshold: int(rp.FailureThreshold),
			},
			PreStop: time.Duration(life.PreStop.Sleep.Seconds) * time.Second,
			Grace:   time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second,
		}
		for _, a := range c.Args {
			if strings.HasPrefix(a, "--shutdown-") {
				s.Args = append(s.Args, a)
			}
		}
		if len(s.Args) == 0 {
			t.Fatalf("the chart's Deployment sets no --shutdown-* flag: %v", c.Args)
		}
		return s
	}
	t.Fatal("helm template rendered no Deployment")
	return chartShutdown{}
}

// drill is the control plane with the webhook Service, its EndpointSlice kept by Endpoints,
// and replicas of the real binary behind it.
type drill struct {
	t         *testing.T // the running (sub)test
	root      *testing.T // the test that owns the processes
	env       *envtest.Env
	ctx       context.Context
	chart     chartShutdown
	bin       string
	certDir   string
	endpoints *Endpoints
	load      *Load
}

// nextIP is the last byte of the next replica's address: each replica of the process (every
// test shares the network namespace) gets a new one, as a new pod does.
var nextIP atomic.Int32

func startDrill(t *testing.T, certManager bool) *drill {
	t.Helper()
	bin := os.Getenv(webhookBinEnv)
	if bin == "" {
		t.Fatal("no webhook binary: TestMain builds it")
	}
	objects := renderChart(t)
	chart := renderedShutdown(t, objects)
	t.Logf("chart: readiness every %s (timeout %s, failureThreshold %d), preStop sleep %s, grace %s, %v",
		chart.Probe.Period, chart.Probe.Timeout, chart.Probe.FailureThreshold, chart.PreStop, chart.Grace, chart.Args)

	// kube-apiserver calls a webhook Service at one of its ready endpoints, as in a cluster.
	opts := envtest.Options{NoWebhook: true, APIServerFlags: map[string]string{
		"enable-aggregator-routing": "true",
		"advertise-address":         APIServerAddress,
	}}
	if certManager {
		crds, err := envtest.CertManagerCRDs()
		if err != nil {
			t.Fatal(err)
		}
		opts.CRDDirs = []string{filepath.Join(envtest.RepoRoot(), "test", "envtest", "crds"), crds}
	}
	env, err := envtest.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Log(err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	d := &drill{t: t, root: t, env: env, ctx: ctx, chart: chart, bin: bin, certDir: filepath.Join(env.Dir, "certs")}

	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: webhookNamespace}},
		{ObjectMeta: metav1.ObjectMeta{Name: workNamespace, Labels: map[string]string{"istio-injection": "enabled"}}},
	} {
		if err := env.Client.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: serviceName, Namespace: webhookNamespace},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "https", Port: 443, TargetPort: intstr.FromInt32(WebhookPort), Protocol: corev1.ProtocolTCP,
		}}},
	}
	if err := env.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if certManager {
		d.startCertManager(objects)
	} else {
		// One certificate for every replica, as the Secret a Certificate writes.
		bundle, err := certs.Generate(certs.Options{Hosts: []string{serviceName + "." + webhookNamespace + ".svc"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := bundle.WriteDir(d.certDir); err != nil {
			t.Fatal(err)
		}
		if err := d.register(bundle.CACert); err != nil {
			t.Fatal(err)
		}
	}
	d.endpoints = &Endpoints{Client: env.Client, Namespace: webhookNamespace, Name: serviceName, PortName: "https", Probe: chart.Probe}
	d.load = &Load{Kubectl: env.KubectlPath, Kubeconfig: env.Kubeconfig, Namespace: workNamespace, Workers: 2}
	return d
}

// register creates the shipped webhook configuration (manifests/base), which calls the
// Service, with caBundle.
func (d *drill) register(caBundle []byte) error {
	raw, err := os.ReadFile(filepath.Join(envtest.RepoRoot(), "manifests", "base", "mutatingwebhookconfiguration.yaml"))
	if err != nil {
		return err
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(raw, mwc); err != nil {
		return err
	}
	for i := range mwc.Webhooks {
		cc := &mwc.Webhooks[i].ClientConfig
		if cc.Service == nil || cc.Service.Name != serviceName || cc.Service.Namespace != webhookNamespace {
			return fmt.Errorf("webhook %s does not call the Service %s/%s", mwc.Webhooks[i].Name, webhookNamespace, serviceName)
		}
		cc.CABundle = caBundle
	}
	return d.env.Client.Create(d.ctx, mwc)
}

// startReplica starts a replica as a new pod: a new address, probed into the endpoints; it
// returns once the replica is ready there.
func (d *drill) startReplica() *Replica {
	d.t.Helper()
	n := nextIP.Add(1) + 10
	name, ip := fmt.Sprintf("webhook-%d", n), fmt.Sprintf("192.0.2.%d", n)
	r, err := StartReplica(d.bin, name, ip, d.certDir, d.env.Kubeconfig, d.env.Dir, d.chart.Args...)
	if err != nil {
		d.t.Fatal(err)
	}
	d.root.Cleanup(r.Kill)
	if err := d.endpoints.Add(d.ctx, r); err != nil {
		d.t.Fatal(err)
	}
	if err := d.endpoints.WaitReady(name, time.Minute); err != nil {
		d.t.Fatalf("%v (log: %s)", err, filepath.Join(d.env.Dir, name+".log"))
	}
	return r
}

// deletePod is the kubelet's and the EndpointSlice controller's part of a pod deletion: the
// preStop sleep, SIGTERM (SIGKILL after the grace period), and the endpoint removed once the
// pod is gone. In the drill the endpoint leaves earlier only through the readiness probe,
// which is what the server's shutdown delay has to cover.
func (d *drill) deletePod(r *Replica) {
	d.t.Helper()
	time.Sleep(d.chart.PreStop)
	term := time.Now()
	took, err := r.Terminate(d.chart.Grace - d.chart.PreStop)
	if err != nil {
		d.t.Error(err)
	}
	d.t.Logf("%s: exited %s after SIGTERM; its endpoint was written unready %s after SIGTERM",
		r.Name, took.Round(time.Millisecond), d.endpoints.Unready(r.Name).Sub(term).Round(time.Millisecond))
	if err := d.endpoints.Remove(d.ctx, r.Name); err != nil {
		d.t.Fatal(err)
	}
}

// TestHandover is the drill: two replicas behind the Service under a steady stream of
// `kubectl apply` of Emissary Deployments and Mappings, through a rolling restart (no failed
// admission, nothing stored unmutated) and a SIGKILL of one replica (failures only until its
// endpoint is unready).
func TestHandover(t *testing.T) {
	d := startDrill(t, false)
	replicas := []*Replica{d.startReplica(), d.startReplica()}
	if err := d.env.WaitForWebhook(time.Minute); err != nil {
		t.Fatal(err)
	}

	t.Run("RollingRestart", func(t *testing.T) {
		s := d.underLoad(t, "roll", func() {
			// maxSurge 1, maxUnavailable 0: a new pod ready, then an old one deleted.
			for i, old := range replicas {
				replicas[i] = d.startReplica()
				d.deletePod(old)
			}
			time.Sleep(2 * time.Second)
		})
		t.Logf("rolling restart: %s", s)
		checkNoFailure(t, s)
	})

	t.Run("SIGKILL", func(t *testing.T) {
		victim := replicas[0]
		var killed time.Time
		var window time.Duration
		s := d.underLoad(t, "kill", func() {
			killed = time.Now()
			victim.Kill()
			for d.endpoints.Unready(victim.Name).Before(killed) {
				if time.Since(killed) > time.Minute {
					t.Fatal("the killed replica's endpoint never went unready")
				}
				time.Sleep(20 * time.Millisecond)
			}
			window = d.endpoints.Unready(victim.Name).Sub(killed)
			time.Sleep(3 * time.Second)
		})
		var last time.Duration
		for _, f := range s.Failures {
			// kubectl starts before its admission: one that ended before the kill was not hit.
			if f.Unmutated || f.End.Before(killed) {
				t.Errorf("%s %s: %v (unmutated %v), not caused by the kill", f.Kind, f.Name, f.Err, f.Unmutated)
			}
			last = max(last, f.End.Sub(killed))
		}
		t.Logf("SIGKILL: %s; endpoint unready %s after the kill; last failure ended %s after it",
			s, window.Round(time.Millisecond), last.Round(time.Millisecond))
		// The API server hears of the unready endpoint within a moment; after that every
		// review goes to the other replica.
		if limit := window + 2*time.Second; last > limit {
			t.Errorf("failures until %s after the kill, after the endpoint was unready (%s)", last, window)
		}
		if err := d.endpoints.Remove(d.ctx, victim.Name); err != nil {
			t.Fatal(err)
		}
	})
	if err := d.endpoints.Err(); err != nil {
		t.Fatal(err)
	}
}

// underLoad runs scenario under the steady stream of applies as t's subtest: the load runs
// for 2 s first, and the returned Summary counts every admission until scenario returned.
func (d *drill) underLoad(t *testing.T, name string, scenario func()) Summary {
	d.t = t
	d.load.Start(name)
	t.Cleanup(func() { d.load.Stop() })
	time.Sleep(2 * time.Second)
	scenario()
	return Summarize(d.load.Stop())
}

func checkNoFailure(t *testing.T, s Summary) {
	t.Helper()
	if s.Attempted < 10 {
		t.Errorf("only %d admissions during the drill", s.Attempted)
	}
	for _, f := range s.Failures {
		t.Errorf("%s %s at %s: error %v, unmutated %v", f.Kind, f.Name, f.Start.Format("15:04:05.000"), f.Err, f.Unmutated)
	}
}
