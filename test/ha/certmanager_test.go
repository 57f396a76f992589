package ha

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
)

// servingCertificate is the chart's serving Certificate (release emissary-istio-webhook).
const servingCertificate = serviceName + "-serving"

// startCertManager installs what the chart installs for tls.mode cert-manager (the Issuer
// chain and the webhook configuration with cert-manager.io/inject-ca-from), runs cert-manager's
// controllers (bin/tools/cert-manager-controller) and its CA injector, and keeps the serving
// Secret's files in d.certDir as the kubelet keeps a Secret volume.
func (d *drill) startCertManager(objects []*unstructured.Unstructured) {
	t := d.t
	t.Helper()
	bin := filepath.Join(envtest.RepoRoot(), "bin", "tools", "cert-manager-controller")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%v: run `make test`, which builds it", err)
	}
	log, err := os.Create(filepath.Join(d.env.Dir, "cert-manager.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--kubeconfig", d.env.Kubeconfig, "--namespace", webhookNamespace)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); log.Close() })
	stop, err := d.env.RunCAInjector()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("CA injector: %v", err)
		}
	})

	var mwc *admissionregistrationv1.MutatingWebhookConfiguration
	for _, u := range objects {
		switch u.GetKind() {
		case "Issuer", "Certificate":
			u.SetNamespace(webhookNamespace)
			if err := d.cmClient().Create(d.ctx, u); err != nil {
				t.Fatal(err)
			}
		case "MutatingWebhookConfiguration":
			mwc = &admissionregistrationv1.MutatingWebhookConfiguration{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, mwc); err != nil {
				t.Fatal(err)
			}
		}
	}
	if mwc == nil || mwc.Annotations["cert-manager.io/inject-ca-from"] != webhookNamespace+"/"+servingCertificate {
		t.Fatalf("the chart's webhook configuration does not inject the CA of %s: %+v", servingCertificate, mwc)
	}
	go d.syncSecret(servingCertificate + "-tls")
	waitFor(t, 2*time.Minute, "cert-manager to issue the serving certificate", func() bool {
		_, err := os.Stat(filepath.Join(d.certDir, certs.CertFile))
		return err == nil
	})
	if err := d.env.Client.Create(d.ctx, mwc); err != nil {
		t.Fatal(err)
	}
	d.waitCABundle("the CA injector to fill the caBundle", func(b []byte) bool { return len(b) > 0 })
}

func (d *drill) cmClient() client.Client {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		d.t.Fatal(err)
	}
	if err := cmapi.AddToScheme(scheme); err != nil {
		d.t.Fatal(err)
	}
	c, err := client.New(d.env.Config, client.Options{Scheme: scheme})
	if err != nil {
		d.t.Fatal(err)
	}
	return c
}

// kubeletSyncPeriod is how often the drill copies the Secret into the replicas' directory;
// the kubelet does it on its own period (a minute by default) plus its cache's TTL.
const kubeletSyncPeriod = time.Second

// syncSecret keeps tls.crt and tls.key of Secret name in d.certDir, as the kubelet updates a
// Secret volume: both files replaced at once (a new directory behind the ..data symlink).
func (d *drill) syncSecret(name string) {
	var last []byte
	for {
		s := &corev1.Secret{}
		if err := d.env.Client.Get(d.ctx, client.ObjectKey{Namespace: webhookNamespace, Name: name}, s); err == nil &&
			len(s.Data[corev1.TLSCertKey]) > 0 && !bytes.Equal(s.Data[corev1.TLSCertKey], last) {
			if err := writeAtomically(d.certDir, s.Data); err != nil {
				d.t.Error(err)
				return
			}
			last = s.Data[corev1.TLSCertKey]
		}
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(kubeletSyncPeriod):
		}
	}
}

// writeAtomically writes tls.crt and tls.key into a new directory and points dir's ..data
// symlink at it, the files being symlinks through ..data, as the kubelet's atomic writer does.
func writeAtomically(dir string, data map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	version, err := os.MkdirTemp(dir, "..version-")
	if err != nil {
		return err
	}
	for _, f := range []struct{ name, key string }{{certs.CertFile, corev1.TLSCertKey}, {certs.KeyFile, corev1.TLSPrivateKeyKey}} {
		if err := os.WriteFile(filepath.Join(version, f.name), data[f.key], 0o600); err != nil {
			return err
		}
		link := filepath.Join(dir, f.name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", f.name), link); err != nil {
				return err
			}
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(version), tmp); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "..data"))
}

// renew forces a renewal of Certificate name through cert-manager, as `cmctl renew` does (the
// Issuing condition set on its status), and waits until the new certificate is issued.
func (d *drill) renew(name string) {
	t := d.t
	t.Helper()
	c := d.cmClient()
	cert := &cmapi.Certificate{}
	if err := c.Get(d.ctx, client.ObjectKey{Namespace: webhookNamespace, Name: name}, cert); err != nil {
		t.Fatal(err)
	}
	revision := 0
	if cert.Status.Revision != nil {
		revision = *cert.Status.Revision
	}
	apiutil.SetCertificateCondition(cert, cert.Generation, cmapi.CertificateConditionIssuing, cmmeta.ConditionTrue,
		"ManuallyTriggered", "Certificate re-issuance manually triggered")
	if err := c.Status().Update(d.ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, fmt.Sprintf("cert-manager to issue revision %d of %s", revision+1, name), func() bool {
		got := &cmapi.Certificate{}
		return c.Get(d.ctx, client.ObjectKeyFromObject(cert), got) == nil && got.Status.Revision != nil &&
			*got.Status.Revision > revision && apiutil.CertificateHasCondition(got, cmapi.CertificateCondition{Type: cmapi.CertificateConditionReady, Status: cmmeta.ConditionTrue})
	})
}

// served is the serial number of the certificate replica r presents.
func served(r *Replica) (string, error) {
	conn, err := tls.Dial("tcp", fmt.Sprintf("%s:%d", r.IP, WebhookPort), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reads the certificate only
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

// secretSerial is the serial number of the certificate in Secret name.
func (d *drill) secretSerial(name string) string {
	block, _ := pem.Decode(d.secretData(name, corev1.TLSCertKey))
	if block == nil {
		d.t.Fatalf("Secret %s holds no certificate", name)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		d.t.Fatal(err)
	}
	return cert.SerialNumber.String()
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !ok(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

// TestCertManager: the serving certificate comes from cert-manager's own controllers,
// through the chart's Issuer chain, and its caBundle from cert-manager's CA injector. Under the
// same load as TestHandover: three renewals forced through cert-manager, then one rotation of
// the CA. No failed or unmutated admission, and each replica serves the new certificate
// afterwards, without a restart.
func TestCertManager(t *testing.T) {
	d := startDrill(t, true)
	replicas := []*Replica{d.startReplica(), d.startReplica()}
	if err := d.env.WaitForWebhook(time.Minute); err != nil {
		t.Fatal(err)
	}
	servedEverywhere := func(what string) {
		t.Helper()
		serial := d.secretSerial(servingCertificate + "-tls")
		waitFor(t, time.Minute, what+" served by every replica", func() bool {
			for _, r := range replicas {
				if got, err := served(r); err != nil || got != serial {
					return false
				}
			}
			return true
		})
	}

	t.Run("Renewals", func(t *testing.T) {
		s := d.underLoad(t, "renew", func() {
			for i := range 3 {
				d.renew(servingCertificate)
				servedEverywhere(fmt.Sprintf("renewal %d", i+1))
				time.Sleep(time.Second)
			}
		})
		t.Logf("three renewals: %s", s)
		checkNoFailure(t, s)
	})

	// The procedure of docs/high-availability.md, "Rotating the CA". cert-manager's CA injector
	// merges what it injects into the caBundle (CAInjectorMerging, on by default) and drops a CA
	// only once it has expired, so the caBundle trusts both CAs from step 2 on; the order is what
	// matters: the new CA in the caBundle before any replica serves a certificate it signed.
	t.Run("CARotation", func(t *testing.T) {
		s := d.underLoad(t, "rotate", func() {
			caCertificate := serviceName + "-ca"
			oldCA := d.secretData(caCertificate, corev1.TLSCertKey)
			// 1. A new CA: its own key (rotationPolicy Always), the serving certificate untouched.
			d.renew(caCertificate)
			newCA := d.secretData(caCertificate, corev1.TLSCertKey)
			if sameCerts(oldCA, newCA) {
				t.Fatal("the CA was renewed with the same certificate")
			}
			// 2. Inject from the CA Certificate: the caBundle trusts the old and the new CA.
			d.injectCAFrom(caCertificate)
			d.waitCABundle("the caBundle to trust the old and the new CA", func(b []byte) bool {
				return sameCerts(b, append(append([]byte{}, oldCA...), newCA...))
			})
			time.Sleep(time.Second) // the API server reads the webhook configuration through its informer
			// 3. The serving certificate from the new CA, served everywhere.
			d.renew(servingCertificate)
			if got := d.secretData(servingCertificate+"-tls", "ca.crt"); !sameCerts(got, newCA) {
				t.Fatalf("the serving certificate was not issued by the new CA: its ca.crt is\n%s", got)
			}
			servedEverywhere("the certificate of the new CA")
			// 4. Back to the chart's injection from the serving Certificate (whose ca.crt is now
			// the new CA): the caBundle keeps both until the old CA expires.
			d.injectCAFrom(servingCertificate)
			time.Sleep(2 * time.Second)
			d.waitCABundle("the caBundle to keep the old and the new CA", func(b []byte) bool {
				return sameCerts(b, append(append([]byte{}, oldCA...), newCA...))
			})
		})
		t.Logf("CA rotation: %s", s)
		checkNoFailure(t, s)
	})
}

// injectCAFrom points the webhook configuration's cert-manager.io/inject-ca-from at
// Certificate name with a merge patch of that one annotation, as `kubectl annotate
// --overwrite` does: the caBundle stays the CA injector's alone.
func (d *drill) injectCAFrom(name string) {
	d.t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"cert-manager.io/inject-ca-from":%q}}}`, webhookNamespace+"/"+name)
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	mwc.Name = serviceName
	if err := d.env.Client.Patch(d.ctx, mwc, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		d.t.Fatal(err)
	}
}

// sameCerts reports whether two PEM bundles hold the same, non-empty set of certificates.
func sameCerts(a, b []byte) bool {
	set := func(p []byte) map[string]bool {
		m := map[string]bool{}
		for {
			var block *pem.Block
			if block, p = pem.Decode(p); block == nil {
				return m
			}
			m[string(block.Bytes)] = true
		}
	}
	x, y := set(a), set(b)
	if len(x) != len(y) || len(x) == 0 {
		return false
	}
	for k := range x {
		if !y[k] {
			return false
		}
	}
	return true
}

// waitCABundle waits until every webhook's caBundle is ok.
func (d *drill) waitCABundle(what string, ok func(caBundle []byte) bool) {
	d.t.Helper()
	got := &admissionregistrationv1.MutatingWebhookConfiguration{}
	defer func() {
		if d.t.Failed() {
			d.t.Logf("webhook configuration: annotations %v, %d webhooks", got.Annotations, len(got.Webhooks))
		}
	}()
	waitFor(d.t, time.Minute, what, func() bool {
		if d.env.Client.Get(d.ctx, client.ObjectKey{Name: serviceName}, got) != nil || len(got.Webhooks) == 0 {
			return false
		}
		for _, w := range got.Webhooks {
			if !ok(w.ClientConfig.CABundle) {
				return false
			}
		}
		return true
	})
}

// secretData is key of Secret name.
func (d *drill) secretData(name, key string) []byte {
	s := &corev1.Secret{}
	if err := d.env.Client.Get(d.ctx, client.ObjectKey{Namespace: webhookNamespace, Name: name}, s); err != nil {
		d.t.Fatal(err)
	}
	return s.Data[key]
}
