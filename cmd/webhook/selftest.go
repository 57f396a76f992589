package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"time"

	"github.com/spf13/cobra"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
)

// selftestLabel marks the namespace `webhook selftest` creates, so that a later run may
// reuse one a killed run left behind, and never touches a namespace that is not its own.
const selftestLabel = "emissary-istio.io/selftest"

// selftestOptions are the flags of `webhook selftest`.
type selftestOptions struct {
	kubeconfig, configPath string
	namespace              string
	namespaceLabels        map[string]string
	webhookConfigName      string
	timeout                time.Duration
}

// newSelftestCommand is `webhook selftest`, the chart's `helm test`: it asks the API server
// for what it would store (server-side dry runs, through every admission webhook) and fails
// unless the webhook changed it.
func newSelftestCommand() *cobra.Command {
	var o selftestOptions
	cmd := &cobra.Command{
		Use:   "selftest",
		Short: "Check, through the API server, that the webhook mutates what it should",
		Long: `selftest creates a namespace that the webhook treats as meshed (labelled from
mapping.meshedNamespaceSelectors of --config), then asks the API server to store, as a
server-side dry run, an Emissary Deployment and a Mapping with a bare service name there, and
fails unless the answers come back mutated: the Deployment with the webhook's status
annotation, the Mapping with tls: <mapping.tlsContext> and the service's port pinned. It
deletes the namespace at the end. The Mapping is skipped, saying so, when the cluster serves
no getambassador.io Mappings or Mapping defaulting is off. Inside a pod it uses the pod's
service account (the chart's helm test gives it the permissions it needs).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := inject.LoadConfig(o.configPath)
			if err != nil {
				return err
			}
			c, err := newClusterClient("selftest", o.kubeconfig)
			if err != nil {
				return err
			}
			return selftest(cmd.Context(), c, cfg, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: the usual kubectl rules, in a pod its service account)")
	f.StringVar(&o.configPath, "config", "", "the webhook's configuration file (default: the built-in defaults)")
	f.StringVar(&o.namespace, "namespace", "emissary-istio-selftest", "the throwaway namespace to create, use and delete")
	f.StringToStringVar(&o.namespaceLabels, "namespace-labels", nil, "more labels for the namespace, e.g. those the webhook configuration's namespaceSelector requires")
	f.StringVar(&o.webhookConfigName, "webhook-config-name", "emissary-istio-webhook", "the MutatingWebhookConfiguration, named in the diagnosis when a check fails")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to keep asking (the webhook's namespace cache sees the new namespace a moment after it is created)")
	return cmd
}

func selftest(ctx context.Context, c client.Client, cfg *inject.Config, o selftestOptions, out io.Writer) (err error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	meshed, _, meshErr := cfg.Mapping.MeshedLabels()
	if err := selftestNamespace(ctx, c, o.namespace, meshed, o.namespaceLabels); err != nil {
		return err
	}
	defer func() {
		// Deleted with a context of its own: the checks' may have run out.
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.namespace}}
		if derr := c.Delete(dctx, ns); derr != nil && !apierrors.IsNotFound(derr) {
			err = errors.Join(err, fmt.Errorf("selftest: deleting namespace %s: %w", o.namespace, derr))
		}
	}()
	fmt.Fprintf(out, "namespace %s, labels %v\n", o.namespace, namespaceLabels(meshed, o.namespaceLabels))

	var failed []string
	if msg, err := until(ctx, func(ctx context.Context) (string, bool, error) { return probeDeployment(ctx, c, o.namespace) }); err != nil {
		failed = append(failed, "Deployment: "+msg)
	} else {
		fmt.Fprintln(out, "ok: Deployment", msg)
	}
	switch gvk, served, err := mappingGVK(c); {
	case err != nil:
		return err
	case !served:
		fmt.Fprintln(out, "skipped: Mapping: the cluster serves no getambassador.io Mappings (install Emissary's CRDs)")
	case meshErr != nil:
		fmt.Fprintln(out, "skipped: Mapping:", meshErr)
	default:
		msg, err := until(ctx, func(ctx context.Context) (string, bool, error) {
			return probeMapping(ctx, c, gvk, o.namespace, cfg.Mapping.TLSContext)
		})
		if err != nil {
			failed = append(failed, "Mapping: "+msg)
		} else {
			fmt.Fprintln(out, "ok: Mapping", msg)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	for _, f := range failed {
		fmt.Fprintln(out, "FAIL:", f)
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	switch err := c.Get(context.Background(), client.ObjectKey{Name: o.webhookConfigName}, mwc); {
	case apierrors.IsNotFound(err):
		fmt.Fprintf(out, "the MutatingWebhookConfiguration %s is not registered\n", o.webhookConfigName)
	case err != nil:
		fmt.Fprintf(out, "the MutatingWebhookConfiguration %s: %v\n", o.webhookConfigName, err)
	default:
		fmt.Fprintf(out, "the MutatingWebhookConfiguration %s is registered: is the webhook ready (kubectl -n <namespace> get pods), does its namespaceSelector admit namespace %s?\n", o.webhookConfigName, o.namespace)
	}
	return fmt.Errorf("selftest: %d check(s) failed: the webhook did not mutate what it should", len(failed))
}

func namespaceLabels(meshed, extra map[string]string) map[string]string {
	l := map[string]string{selftestLabel: "true"}
	maps.Copy(l, meshed)
	maps.Copy(l, extra)
	return l
}

// selftestNamespace creates the namespace, or takes over one an earlier run left (it carries
// selftestLabel); any other namespace of that name is an error.
func selftestNamespace(ctx context.Context, c client.Client, name string, meshed, extra map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: namespaceLabels(meshed, extra)}}
	err := c.Create(ctx, ns)
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("selftest: creating namespace %s: %w", name, err)
		}
		return nil
	}
	existing := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, existing); err != nil {
		return fmt.Errorf("selftest: namespace %s: %w", name, err)
	}
	if existing.Labels[selftestLabel] != "true" {
		return fmt.Errorf("selftest: namespace %s exists and is not a selftest's (no %s label): pick another with --namespace", name, selftestLabel)
	}
	if existing.DeletionTimestamp != nil {
		return fmt.Errorf("selftest: namespace %s, left by an earlier run, is being deleted: run again in a moment", name)
	}
	existing.Labels = ns.Labels
	return c.Update(ctx, existing)
}

// until calls check until it reports done, fails or ctx ends, and at least once (a check
// after another that used all the time still gets its answer); each call has its own
// context. The message is the last one.
func until(ctx context.Context, check func(context.Context) (string, bool, error)) (string, error) {
	for {
		callCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		msg, done, err := check(callCtx)
		cancel()
		switch {
		case err != nil:
			return err.Error(), err
		case done:
			return msg, nil
		}
		select {
		case <-ctx.Done():
			return msg, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// probeDeployment dry-runs an Emissary Deployment into ns: done when it comes back with the
// webhook's status annotation (both modes write it).
func probeDeployment(ctx context.Context, c client.Client, ns string) (string, bool, error) {
	labels := map[string]string{"app.kubernetes.io/name": "emissary-istio-selftest"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "selftest", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{inject.AnnotationInject: "true"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "ambassador", Image: "docker.io/emissaryingress/emissary:3.10.0",
				}}},
			},
		},
	}
	if err := c.Create(ctx, d, client.DryRunAll); err != nil {
		return "", false, fmt.Errorf("the API server refused the dry run: %w", err)
	}
	if status := d.Spec.Template.Annotations[inject.AnnotationStatus]; status != "" {
		return fmt.Sprintf("came back injected (%d containers, %d init containers)", len(d.Spec.Template.Spec.Containers), len(d.Spec.Template.Spec.InitContainers)), true, nil
	}
	return fmt.Sprintf("came back without the %s annotation: not injected", inject.AnnotationStatus), false, nil
}

// mappingGVK is the version of getambassador.io Mappings the API server prefers, if it
// serves them.
func mappingGVK(c client.Client) (schema.GroupVersionKind, bool, error) {
	m, err := c.RESTMapper().RESTMapping(schema.GroupKind{Group: "getambassador.io", Kind: "Mapping"})
	if apimeta.IsNoMatchError(err) {
		return schema.GroupVersionKind{}, false, nil
	}
	if err != nil {
		return schema.GroupVersionKind{}, false, fmt.Errorf("selftest: discovering Mappings: %w", err)
	}
	return m.GroupVersionKind, true, nil
}

// probeMapping dry-runs a Mapping to a bare service name into ns, which is meshed: done when
// it comes back with tls: tlsContext and the service's port pinned to 80.
func probeMapping(ctx context.Context, c client.Client, gvk schema.GroupVersionKind, ns, tlsContext string) (string, bool, error) {
	m := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": "selftest", "namespace": ns},
		"spec":     map[string]any{"prefix": "/emissary-istio-selftest/", "service": "selftest"},
	}}
	m.SetGroupVersionKind(gvk)
	if err := c.Create(ctx, m, client.DryRunAll); err != nil {
		return "", false, fmt.Errorf("the API server refused the dry run: %w", err)
	}
	tls, _, _ := unstructured.NestedFieldNoCopy(m.Object, "spec", "tls")
	svc, _, _ := unstructured.NestedString(m.Object, "spec", "service")
	if tls == tlsContext && svc == "selftest:80" {
		return fmt.Sprintf("came back with tls: %s and service: %s", tlsContext, svc), true, nil
	}
	return fmt.Sprintf("came back with tls: %v and service: %s, want tls: %s and service: selftest:80 (namespace %s is meshed)", tls, svc, tlsContext, ns), false, nil
}
