package envtest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
)

// serviceAccount is the identity the shipped manifests run the webhook as.
const serviceAccount = "system:serviceaccount:" + installNamespace + ":" + webhookName

// TestSelfSigned runs `webhook serve --self-signed` (the built binary) as the shipped
// ServiceAccount, with exactly the RBAC of manifests/base plus the self-signed component,
// on a control plane without cert-manager, registered by URL through the shipped webhook
// configuration, which starts with no caBundle.
func TestSelfSigned(t *testing.T) {
	e, err := Start(Options{NoWebhook: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop() }) // after the replicas' cleanups, which stop them

	// The self-signed variant installs without cert-manager's CRDs. Istio's namespace exists
	// (Istio is installed first): the base's Role for the mesh view lives there.
	if _, _, err := e.Kubectl(nil, "create", "namespace", "istio-system"); err != nil {
		t.Fatal(err)
	}
	m := kustomize(t, []string{"self-signed"}, "")
	if _, stderr, err := e.Kubectl(m.yaml, "apply", "--server-side", "--validate=strict", "-f", "-"); err != nil || strings.Contains(stderr, "Warning") {
		t.Fatalf("applying base + self-signed: %v\n%s", err, stderr)
	}
	kubeconfig := impersonating(t, e, serviceAccount)

	a := newSelfSigned(t)
	setWebhookURL(t, e, a.url, true)
	for _, w := range webhookConfiguration(t, e).Webhooks {
		if len(w.ClientConfig.CABundle) != 0 {
			t.Fatalf("webhook %s starts with a caBundle", w.Name)
		}
	}
	a.start(t, kubeconfig, resyncArgs...)

	t.Run("fixes an empty caBundle", func(t *testing.T) {
		a.waitReady(t)
		waitTrusted(t, e, a.ca(t))
		if err := e.WaitForWebhook(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("restores a caBundle someone cleared, from its watch", func(t *testing.T) {
		setWebhookURL(t, e, a.url, true)
		waitTrusted(t, e, a.ca(t))
		if err := e.WaitForWebhook(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a second replica with its own CA: both trusted, no tug of war", func(t *testing.T) {
		b := newSelfSigned(t)
		b.start(t, kubeconfig, resyncArgs...)
		b.waitReady(t)
		bundle := waitTrusted(t, e, a.ca(t), b.ca(t))
		for _, r := range []*selfSignedProcess{a, b} {
			if s := servedSerialAt(r.addr, bundle); s == nil {
				t.Errorf("replica %s does not verify against the caBundle", r.addr)
			}
		}
		// Both replicas re-read the configuration on their own, with no watch event to
		// prompt them, and neither writes it: each resync finds its CA already trusted.
		before := webhookConfiguration(t, e).ResourceVersion
		marks := []int{a.resyncs(), b.resyncs()}
		eventually(t, 30*time.Second, func() (string, bool) {
			// Two more: the one logged before the mark may not have read the configuration yet.
			return fmt.Sprintf("resyncs since the mark: %d and %d, want 2 each", a.resyncs()-marks[0], b.resyncs()-marks[1]),
				a.resyncs() >= marks[0]+2 && b.resyncs() >= marks[1]+2
		})
		if after := webhookConfiguration(t, e).ResourceVersion; after != before {
			t.Fatalf("the replicas keep rewriting the webhook configuration (resourceVersion %s → %s)", before, after)
		}
	})

	t.Run("renews before expiry with no failed admission", func(t *testing.T) {
		// A 9s validity: renewed when 3s are left, some 6s after start.
		c := newSelfSigned(t)
		c.start(t, kubeconfig, "--cert-validity=9s")
		c.waitReady(t)
		setWebhookURL(t, e, c.url, false)
		waitTrusted(t, e, c.ca(t))
		if err := e.WaitForWebhook(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		first := servedSerialAt(c.addr, c.ca(t))
		if first == nil {
			t.Fatal("cannot read the served certificate")
		}
		stream := admissionStream(e)
		eventually(t, 20*time.Second, func() (string, bool) {
			bundle := webhookConfiguration(t, e).Webhooks[0].ClientConfig.CABundle
			s := servedSerialAt(c.addr, bundle)
			return "the certificate was not renewed", s != nil && s.Cmp(first) != 0
		})
		time.Sleep(time.Second)
		ok, failed, firstErr := stream.stop()
		t.Logf("%d admissions during the renewal, %d failed", ok, failed)
		if failed != 0 || ok == 0 {
			t.Fatalf("%d admissions succeeded, %d failed; first failure: %s", ok, failed, firstErr)
		}
		if !certs.Trusts(webhookConfiguration(t, e).Webhooks[0].ClientConfig.CABundle, c.ca(t)) {
			t.Fatal("the renewed CA is not trusted")
		}
	})
}

// resyncArgs make a replica re-check the caBundle every second instead of every minute, and
// log each resync (at debug level), so that a test sees resyncs happen.
var resyncArgs = []string{"--ca-bundle-resync=1s", "--zap-log-level=debug"}

// resyncLog is what the keeper logs at each resync.
const resyncLog = "resync: re-checking the caBundle"

// selfSignedProcess is one `webhook serve --self-signed` replica on 127.0.0.1.
type selfSignedProcess struct {
	addr    string // host:port of the webhook
	url     string
	health  string
	certDir string
	logs    *LockedBuffer // set by start
}

// resyncs counts the periodic re-checks the replica has logged so far.
func (p *selfSignedProcess) resyncs() int { return strings.Count(p.logs.String(), resyncLog) }

// newSelfSigned picks a replica's ports and certificate directory.
func newSelfSigned(t *testing.T) *selfSignedProcess {
	t.Helper()
	ports := make([]int, 2)
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	p := &selfSignedProcess{
		addr:    "127.0.0.1:" + strconv.Itoa(ports[0]),
		health:  "127.0.0.1:" + strconv.Itoa(ports[1]),
		certDir: t.TempDir(),
	}
	p.url = "https://" + p.addr
	return p
}

// start runs the replica as the user of kubeconfig; it is stopped (SIGTERM, then waited for)
// when the test ends.
func (p *selfSignedProcess) start(t *testing.T, kubeconfig string, extraArgs ...string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(p.addr)
	args := append([]string{"serve", "--self-signed", "--dns-names=127.0.0.1",
		"--cert-dir=" + p.certDir, "--host=127.0.0.1", "--port=" + port,
		"--metrics-bind-address=0", "--health-probe-bind-address=" + p.health,
	}, extraArgs...)
	p.logs = startWebhookProcess(t, kubeconfig, args...)
}

// waitReady waits for /readyz, which includes the caBundle check.
func (p *selfSignedProcess) waitReady(t *testing.T) {
	t.Helper()
	eventually(t, 30*time.Second, func() (string, bool) {
		resp, err := http.Get("http://" + p.health + "/readyz?verbose")
		if err != nil {
			return err.Error(), false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body), resp.StatusCode == http.StatusOK && strings.Contains(string(body), "ca-bundle ok")
	})
}

// ca is the replica's current CA, as it wrote it.
func (p *selfSignedProcess) ca(t *testing.T) []byte {
	t.Helper()
	_, ca, err := certs.Load(p.certDir)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// impersonating writes a copy of e's admin kubeconfig that acts as user (a ServiceAccount),
// so the API server authorizes every request with that account's RBAC.
func impersonating(t *testing.T, e *Env, user string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(e.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, auth := range cfg.AuthInfos {
		auth.Impersonate = user
		auth.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + installNamespace, "system:authenticated"}
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// setWebhookURL points every webhook of the installed configuration at url; with
// clearCABundle it also empties the caBundles.
func setWebhookURL(t *testing.T, e *Env, url string, clearCABundle bool) {
	t.Helper()
	mwc := webhookConfiguration(t, e)
	shipped, err := WebhookConfiguration(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range mwc.Webhooks {
		bundle := mwc.Webhooks[i].ClientConfig.CABundle
		mwc.Webhooks[i].ClientConfig = shipped.Webhooks[i].ClientConfig
		if !clearCABundle {
			mwc.Webhooks[i].ClientConfig.CABundle = bundle
		}
	}
	if err := e.Client.Update(context.Background(), mwc); err != nil {
		t.Fatal(err)
	}
}

func webhookConfiguration(t *testing.T, e *Env) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := e.Client.Get(context.Background(), client.ObjectKey{Name: webhookName}, mwc); err != nil {
		t.Fatal(err)
	}
	return mwc
}

// waitTrusted waits until every webhook's caBundle trusts every CA, and returns the bundle.
func waitTrusted(t *testing.T, e *Env, cas ...[]byte) []byte {
	t.Helper()
	var bundle []byte
	eventually(t, 15*time.Second, func() (string, bool) {
		for _, w := range webhookConfiguration(t, e).Webhooks {
			for i, ca := range cas {
				if !certs.Trusts(w.ClientConfig.CABundle, ca) {
					return fmt.Sprintf("the caBundle of %s does not trust CA #%d", w.Name, i+1), false
				}
			}
			bundle = w.ClientConfig.CABundle
		}
		return "", true
	})
	return bundle
}

// servedSerialAt dials addr, verifying against bundle, and returns the serial of the
// certificate it presents, or nil.
func servedSerialAt(addr string, bundle []byte) *big.Int {
	pool, err := certs.CAPool(bundle)
	if err != nil {
		return nil
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		return nil
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// stream is a running stream of server-side dry-run admissions of an Emissary Deployment
// through the API server, by two clients.
type stream struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	done       chan struct{}
	wg         sync.WaitGroup
}

func admissionStream(e *Env) *stream {
	s := &stream{done: make(chan struct{})}
	for range 2 {
		s.wg.Go(func() {
			for {
				select {
				case <-s.done:
					return
				default:
				}
				d := ProbeDeployment()
				err := e.Client.Create(context.Background(), d, client.DryRunAll)
				switch {
				case err == nil && len(d.Spec.Template.Spec.Containers) == 2:
					s.ok.Add(1)
				case err == nil:
					s.failed.Add(1)
					s.firstErr.CompareAndSwap(nil, "admitted without injection")
				default:
					s.failed.Add(1)
					s.firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	return s
}

// stop ends the stream and returns its counts and first failure.
func (s *stream) stop() (ok, failed int64, firstErr any) {
	close(s.done)
	s.wg.Wait()
	return s.ok.Load(), s.failed.Load(), s.firstErr.Load()
}
