package selfsigned

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/emissary-istio/emissary-istio-webhook/certs"
	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
)

// env is a real kube-apiserver and etcd, without the webhook: the keeper only ever talks
// to the API server about its MutatingWebhookConfiguration.
var env *envtest.Env

func TestMain(m *testing.M) {
	os.Exit(envtest.RunSuite(m, envtest.Options{NoWebhook: true}, &env))
}

// newKeeper installs a webhook configuration named after the test (the shipped one, with
// no caBundle) and returns a keeper for it over a fresh certificate directory.
func newKeeper(t *testing.T, validity time.Duration) *Keeper {
	t.Helper()
	mwc, err := envtest.WebhookConfiguration("https://127.0.0.1:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	mwc.Name = fmt.Sprintf("keeper-%d", time.Now().UnixNano())
	if err := env.Client.Create(context.Background(), mwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), mwc) })
	k, err := New(env.Config, Options{
		CertDir: t.TempDir(), Hosts: []string{"127.0.0.1"}, Validity: validity, WebhookConfigName: mwc.Name,
	}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// webhookConfiguration reads k's configuration back from the API server.
func webhookConfiguration(t *testing.T, k *Keeper) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	mwc, err := k.webhooks.Get(context.Background(), k.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return mwc
}

// checkTrusted fails t unless every webhook of k's configuration trusts ca.
func checkTrusted(t *testing.T, k *Keeper, ca []byte) {
	t.Helper()
	for _, w := range webhookConfiguration(t, k).Webhooks {
		if !certs.Trusts(w.ClientConfig.CABundle, ca) {
			t.Fatalf("the caBundle of webhook %s does not trust the CA", w.Name)
		}
	}
}

// servedCA is the CA in the keeper's directory: the one whose certificate the server reads.
func servedCA(t *testing.T, k *Keeper) []byte {
	t.Helper()
	_, ca, err := certs.Load(k.certDir)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// clearCABundles empties every caBundle of k's configuration, as an operator re-applying
// the shipped YAML would.
func clearCABundles(t *testing.T, k *Keeper) {
	t.Helper()
	mwc := webhookConfiguration(t, k)
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.CABundle = nil
	}
	if _, err := k.webhooks.Update(context.Background(), mwc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestKeeperTrustsItsCA: the keeper makes the empty caBundles trust the CA it serves, is
// ready only then, and puts the CA back when someone clears the caBundles.
func TestKeeperTrustsItsCA(t *testing.T) {
	k := newKeeper(t, time.Hour)
	ctx := context.Background()
	if err := k.Ready(nil); err == nil {
		t.Fatal("ready before the caBundle trusts the CA")
	}
	if err := k.sync(ctx); err != nil {
		t.Fatal(err)
	}
	checkTrusted(t, k, servedCA(t, k))
	if err := k.Ready(nil); err != nil {
		t.Fatalf("not ready once trusted: %v", err)
	}

	clearCABundles(t, k)
	if err := k.sync(ctx); err != nil {
		t.Fatal(err)
	}
	checkTrusted(t, k, servedCA(t, k))
}

// TestKeeperRenewsWhatEnsureWouldReplace: renewal and start judge a certificate directory
// by the same rule (certs.Verify). A certificate that is far from expiry but that ca.crt
// does not verify, here because ca.crt is another CA, is replaced, and the CA then served is
// the one the caBundle trusts.
func TestKeeperRenewsWhatEnsureWouldReplace(t *testing.T) {
	k := newKeeper(t, 40*time.Second)
	ctx := context.Background()
	if err := k.sync(ctx); err != nil {
		t.Fatal(err)
	}
	other, err := certs.Generate(certs.Options{Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(k.certDir, certs.CAFile), other.CACert, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.Verify(k.certDir, k.opts.Hosts, k.renewBefore(), time.Now()); err == nil {
		t.Fatal("the spoiled directory still verifies")
	}

	k.renewIfDue(ctx)
	if _, err := certs.Verify(k.certDir, k.opts.Hosts, k.renewBefore(), time.Now()); err != nil {
		t.Fatalf("not renewed: %v", err)
	}
	checkTrusted(t, k, servedCA(t, k))
}

// TestKeeperKeepsServedCAWhenWriteFails: a renewal whose new certificate cannot be written
// leaves the previous one served, so the keeper must go on keeping the previous CA trusted,
// as it does when the caBundle update fails. Here the directory has become a plain file.
func TestKeeperKeepsServedCAWhenWriteFails(t *testing.T) {
	k := newKeeper(t, 40*time.Second)
	ctx := context.Background()
	if err := k.sync(ctx); err != nil {
		t.Fatal(err)
	}
	served := servedCA(t, k)
	if err := os.RemoveAll(k.certDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.certDir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}

	k.renewIfDue(ctx) // trusts a new CA, then cannot write its certificate
	if !bytes.Equal(k.currentCA(), served) {
		t.Fatal("after a failed write the keeper keeps a CA whose certificate is not served")
	}
	clearCABundles(t, k)
	if err := k.sync(ctx); err != nil {
		t.Fatal(err)
	}
	checkTrusted(t, k, served)
	if err := k.Ready(nil); err != nil {
		t.Fatalf("not ready: %v", err)
	}
}
