package envtest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
)

// TestCertManager installs the webhook as a cluster with cert-manager runs it, on a control
// plane of its own (the shipped manifests replace the webhook configuration every other
// suite uses) with cert-manager's real CRDs from its Go module, the project's Emissary CRDs
// and minimal TracingService and PeerAuthentication CRDs. The webhook runs in-process on
// 127.0.0.1; each subtest sets up what it needs, so they run in any order or alone.
func TestCertManager(t *testing.T) {
	e, err := Start(Options{CRDDirs: []string{
		filepath.Join(RepoRoot(), "test", "envtest", "crds"),
		certManagerCRDs(t),
		filepath.Join(RepoRoot(), "test", "envtest", "testdata", "crds"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()

	t.Run("base applies with no Pod Security warning", func(t *testing.T) { testBaseApplies(t, e) })
	t.Run("components apply", func(t *testing.T) { testComponentsApply(t, e) })
	t.Run("cert-manager's CA injector fills the caBundle", func(t *testing.T) { testCAInjector(t, e) })
	t.Run("serving certificate renewed under load", func(t *testing.T) { testRotationUnderLoad(t, e) })
}

// certManagerCRDs is CertManagerCRDs, or the test fails.
func certManagerCRDs(t *testing.T) string {
	t.Helper()
	dir, err := CertManagerCRDs()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// testBaseApplies: `kubectl apply --server-side` of manifests/base, every field validated
// strictly, and the webhook's Deployment draws no Pod Security warning in its namespace,
// which warns at restricted. A deliberately non-compliant copy does draw one, so silence
// means compliance, not a control plane that never warns.
func testBaseApplies(t *testing.T, e *Env) {
	base := kustomizeDir(t, filepath.Join(RepoRoot(), "manifests", "base"))
	// Istio is installed first: the base's Role for the mesh view lives in its namespace.
	if _, _, err := e.Kubectl(nil, "create", "namespace", "istio-system"); err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
		t.Fatal(err)
	}
	// Installing is creating: the harness's registration of the same name goes first.
	if _, _, err := e.Kubectl(nil, "delete", "mutatingwebhookconfiguration", webhookName, "--ignore-not-found"); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := e.Kubectl(base.yaml, "apply", "--server-side", "--validate=strict", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stderr, "Warning") {
		t.Errorf("kubectl apply printed warnings:\n%s", stderr)
	}
	// Every object is stored.
	if out, _, err := e.Kubectl(base.yaml, "get", "-f", "-", "-o", "name"); err != nil || strings.Count(out, "\n") != len(base.objects) {
		t.Fatalf("stored %d of %d objects (%v):\n%s", strings.Count(out, "\n"), len(base.objects), err, out)
	}
	ns, _, err := e.Kubectl(nil, "get", "namespace", installNamespace, "-o", `jsonpath={.metadata.labels.pod-security\.kubernetes\.io/warn}`)
	if err != nil || ns != "restricted" {
		t.Fatalf("namespace %s warns at %q (%v), want restricted", installNamespace, ns, err)
	}

	deploy := base.get(t, "Deployment", webhookName, nil).DeepCopy()
	unstructured.RemoveNestedField(deploy.Object, "spec", "template", "spec", "securityContext")
	containers, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	delete(containers[0].(map[string]any), "securityContext")
	if err := unstructured.SetNestedSlice(deploy.Object, containers, "spec", "template", "spec", "containers"); err != nil {
		t.Fatal(err)
	}
	_, stderr, err = e.Kubectl(toYAML(t, deploy), "apply", "--server-side", "--dry-run=server", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, `would violate PodSecurity "restricted`) {
		t.Fatalf("the control plane did not warn about a Deployment without securityContext; stderr:\n%s", stderr)
	}
}

// testComponentsApply: each component's objects pass the API server's validation (strict
// field validation against the CRDs) next to the base. The self-signed component is applied
// by TestSelfSigned, on a control plane without cert-manager.
func testComponentsApply(t *testing.T, e *Env) {
	for _, ns := range []string{"ambassador", "istio-system"} {
		if _, _, err := e.Kubectl(nil, "create", "namespace", ns); err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
			t.Fatal(err)
		}
	}
	for _, components := range [][]string{
		{"tls-context", "tracing", "strict-mtls", "prometheus"},
		{"legacy-istio-1.4"},
	} {
		m := kustomize(t, components, "")
		// The base's objects are left to testBaseApplies (and its webhook configuration
		// would replace the one the other subtests register).
		own := m.only(t, func(u *unstructured.Unstructured) bool {
			return u.GetNamespace() != installNamespace && u.GetKind() != "Namespace" &&
				!strings.HasPrefix(u.GetName(), webhookName)
		})
		_, stderr, err := e.Kubectl(own, "apply", "--server-side", "--validate=strict", "-f", "-")
		if err != nil {
			t.Fatalf("%v: %v", components, err)
		}
		if strings.Contains(stderr, "Warning") {
			t.Errorf("%v: kubectl apply printed warnings:\n%s", components, stderr)
		}
		out, _, err := e.Kubectl(own, "get", "-f", "-", "-o", "name")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%v stored:\n%s", components, out)
	}
	mtls, _, err := e.Kubectl(nil, "get", "peerauthentications.v1beta1.security.istio.io", "default", "-n", "istio-system", "-o", "jsonpath={.spec.mtls.mode}")
	if err != nil || mtls != "STRICT" {
		t.Errorf("PeerAuthentication mode = %q (%v), want STRICT", mtls, err)
	}
	secret, _, err := e.Kubectl(nil, "get", "tlscontexts.v3alpha1.getambassador.io", "istio-upstream", "-n", "ambassador", "-o", "jsonpath={.spec.secret}")
	if err != nil || secret != "istio.default" {
		t.Errorf("after legacy-istio-1.4, TLSContext secret = %q (%v), want istio.default", secret, err)
	}
}

// testCAInjector runs cert-manager's own CA injector in-process against this control plane.
// cert-manager's issuing controllers are not run; the test writes the serving Certificate
// (the one from manifests/base) and its Secret as they would, with a certificate from
// certs.Generate that the in-process webhook serves. The webhook configuration starts with
// no caBundle, so the API server cannot call the webhook until the injector has copied the
// Secret's ca.crt into every webhook of it.
func testCAInjector(t *testing.T, e *Env) {
	ctx := context.Background()
	base := kustomizeDir(t, filepath.Join(RepoRoot(), "manifests", "base"))
	var cert cmapi.Certificate
	certObj := base.get(t, "Certificate", servingCertificate, &cert)
	if _, _, err := e.Kubectl(base.only(t, func(u *unstructured.Unstructured) bool {
		return u.GetKind() == "Namespace" || u == certObj
	}), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}

	bundle := serveNewBundle(t, e)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: cert.Spec.SecretName, Namespace: cert.Namespace,
			Annotations: map[string]string{cmapi.CertificateNameKey: cert.Name},
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": bundle.CertPEM, "tls.key": bundle.KeyPEM, "ca.crt": bundle.CACert},
	}
	if err := e.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	defer e.Client.Delete(ctx, secret)

	// The shipped configuration, by URL, with its inject-ca-from annotation and no caBundle.
	mwc := registerWith(t, e, nil)
	if got := mwc.Annotations[cmapi.WantInjectAnnotation]; got != cert.Namespace+"/"+cert.Name {
		t.Fatalf("inject-ca-from = %q, want the serving Certificate %s/%s", got, cert.Namespace, cert.Name)
	}
	eventually(t, 15*time.Second, func() (string, bool) {
		err := e.Client.Create(ctx, ProbeDeployment(), client.DryRunAll)
		return "the API server still calls a webhook it has no CA for", err != nil
	})

	stop := runCAInjector(t, e)
	defer stop()
	eventually(t, 30*time.Second, func() (string, bool) {
		got := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(mwc), got); err != nil {
			return err.Error(), false
		}
		for _, w := range got.Webhooks {
			if !bytes.Equal(w.ClientConfig.CABundle, bundle.CACert) {
				return "the CA injector did not fill the caBundle of " + w.Name, false
			}
		}
		return "", len(got.Webhooks) == len(mwc.Webhooks)
	})
	if err := e.WaitForWebhook(30 * time.Second); err != nil {
		t.Fatalf("after injection: %v", err)
	}
}

// runCAInjector is RunCAInjector, or the test fails; stop reports the injector's error.
func runCAInjector(t *testing.T, e *Env) (stop func()) {
	t.Helper()
	stopInjector, err := e.RunCAInjector()
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := stopInjector(); err != nil {
			t.Errorf("CA injector: %v", err)
		}
	}
}

// testRotationUnderLoad renews the serving certificate on disk the way cert-manager renews
// it (a new key and certificate from the same CA, written into the mounted directory) while
// admissions stream through the API server: none may fail, and the server must present the
// new certificate afterwards, with no restart.
func testRotationUnderLoad(t *testing.T, e *Env) {
	first := serveNewBundle(t, e)
	registerWith(t, e, first.CACert)
	if err := e.WaitForWebhook(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	stream := admissionStream(e)
	time.Sleep(time.Second)
	before := stream.ok.Load()

	renewed, err := first.Reissue(certs.Options{Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := renewed.WriteDir(e.CertDir); err != nil {
		t.Fatal(err)
	}
	want := leafSerial(t, renewed.CertPEM)
	eventually(t, 20*time.Second, func() (string, bool) {
		s := servedSerialAt(strings.TrimPrefix(e.WebhookURL, "https://"), renewed.CACert)
		return "the server does not present the renewed certificate", s != nil && s.Cmp(want) == 0
	})
	atSwitch := stream.ok.Load()
	time.Sleep(time.Second)
	ok, failed, firstErr := stream.stop()

	t.Logf("%d admissions before the renewal, %d while it was picked up, %d after; %d failed",
		before, atSwitch-before, ok-atSwitch, failed)
	if failed != 0 {
		t.Fatalf("%d admissions failed during the renewal; first: %v", failed, firstErr)
	}
	if before == 0 || ok == atSwitch {
		t.Fatal("no admissions ran before or after the renewal: the stream proves nothing")
	}
}

// serveNewBundle makes a fresh CA and serving certificate for the in-process webhook, writes
// it where the server reads it, and waits until the server presents it.
func serveNewBundle(t *testing.T, e *Env) *certs.Bundle {
	t.Helper()
	b, err := certs.Generate(certs.Options{Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WriteDir(e.CertDir); err != nil {
		t.Fatal(err)
	}
	want := leafSerial(t, b.CertPEM)
	eventually(t, 20*time.Second, func() (string, bool) {
		s := servedSerialAt(strings.TrimPrefix(e.WebhookURL, "https://"), b.CACert)
		return "the server does not present the new certificate", s != nil && s.Cmp(want) == 0
	})
	return b
}

// registerWith replaces the webhook configuration with the shipped one pointing at e's
// server, with caBundle (nil: none).
func registerWith(t *testing.T, e *Env, caBundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	mwc, err := WebhookConfiguration(e.WebhookURL, caBundle)
	if err != nil {
		t.Fatal(err)
	}
	existing := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := e.Client.Get(context.Background(), client.ObjectKeyFromObject(mwc), existing); err == nil {
		mwc.ResourceVersion = existing.ResourceVersion
		err = e.Client.Update(context.Background(), mwc)
		if err != nil {
			t.Fatal(err)
		}
		return mwc
	}
	if err := e.Client.Create(context.Background(), mwc); err != nil {
		t.Fatal(err)
	}
	return mwc
}

func leafSerial(t *testing.T, certPEM []byte) *big.Int {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber
}
