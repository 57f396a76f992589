package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mapping"
)

// errFindings makes `webhook audit` exit non-zero when something is not integrated, like
// `kubectl diff`, so it can gate a pipeline or follow an outage.
var errFindings = errors.New("audit: some objects are not integrated")

func newAuditCommand() *cobra.Command {
	var kubeconfig, configPath, output string
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "List Emissary workloads and Mappings in a cluster that are not integrated with Istio",
		Long: `audit reads every Deployment, DaemonSet, bare Pod and Mapping in the cluster and lists,
with the reason, each one that is not integrated as the webhook would integrate it now:

  not-injected      an Emissary edge stored without istio-proxy (created before the webhook
                    handled it, e.g. a DaemonSet before v0.2.0, or while it could not answer)
  stale-config      istio-proxy rendered from another configuration (an Istio upgrade)
  modified          the pod template was edited around the webhook
  stale-injection   istio-proxy still there although the workload opted out
  opt-out           an edge that opts out (emissary-istio.io/inject: "false")
  host-network      a hostNetwork edge, which the webhook (like Istio) does not inject
  unknown-image     labelled as Emissary's, but no container is recognisably the edge
  container-not-found  opted in without a usable container
  no-tls            a Mapping to a meshed namespace stored without tls
  stale-tls         a Mapping with the webhook's tls whose upstream left the mesh
  unknown-revision  a workload whose istio.io/rev (namespace or pod) names no Istio revision
                    or tag of the cluster
  moved-revision    istio-proxy talks to another istiod than the revision serving it now (a
                    moved revision tag): kubectl rollout restart
  unsupported-skew  istio-proxy's release is newer than its control plane's, or more than one
                    release older, which Istio does not support
  older-proxy       (a notice, exit status 0) istio-proxy is one release older than its
                    control plane: supported until the next restart
  opt-out, scheme, tls-set  a Mapping to a meshed namespace that opts out, uses http:// or
                    https://, or sets tls true, false or "": plain text or TLS without Istio's
                    certificate, which STRICT mTLS rejects

It reads the configuration the running webhook uses (the ConfigMap its Deployment mounts;
--config names a file instead) and the cluster's Istio (its injector webhooks and
revisions), as the webhook does. It changes nothing, and exits 1 when it found something. Emissary's helpers (apiext, the
Consul connector, the agent), other applications and hand-written integrations are not
listed.

To fix a workload, send it through the webhook again: kubectl rollout restart (or, for a bare
Pod, re-create it); a Mapping: kubectl apply --server-side (a client-side apply of an
unchanged file sends no request).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "json" {
				return fmt.Errorf(`audit: -o %q: only "json" (or nothing, for a table) is known`, output)
			}
			loading := clientcmd.NewDefaultClientConfigLoadingRules()
			loading.ExplicitPath = kubeconfig
			restCfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loading, nil).ClientConfig()
			if err != nil {
				return fmt.Errorf("audit: kubernetes client configuration: %w", err)
			}
			c, err := client.New(restCfg, client.Options{Scheme: clientgoscheme.Scheme})
			if err != nil {
				return fmt.Errorf("audit: %w", err)
			}
			// The running webhook's configuration, unless --config names another.
			cfg, source := (*inject.Config)(nil), "--config "+configPath
			if configPath != "" {
				cfg, err = inject.LoadConfig(configPath)
			} else {
				cfg, source, err = clusterConfig(cmd.Context(), c)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "configuration: %s\n", source)
			findings, err := audit(cmd.Context(), c, cfg)
			if err != nil {
				return err
			}
			if output == "json" {
				err = printJSON(cmd.OutOrStdout(), findings)
			} else {
				err = printTable(cmd.OutOrStdout(), findings)
			}
			if err != nil {
				return err
			}
			if faults(findings) > 0 {
				cmd.SilenceErrors = true
				fmt.Fprintf(cmd.ErrOrStderr(), "%d object(s) not integrated\n", faults(findings))
				return errFindings
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "every Emissary workload and every Mapping to a meshed namespace is integrated")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: the usual kubectl rules)")
	f.StringVar(&configPath, "config", "", "configuration file (default: the running webhook's, read from its ConfigMap)")
	f.StringVarP(&output, "output", "o", "", `"json" for a JSON array of findings (kind, namespace, name, reason, message)`)
	return cmd
}

// finding is one object audit lists.
type finding struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Reason    string `json:"reason"`
	Message   string `json:"message"`
	// Notice: worth knowing, not a fault (the exit status ignores it).
	Notice bool `json:"notice,omitempty"`
}

// faults counts the findings that are not notices.
func faults(found []finding) int {
	n := 0
	for _, f := range found {
		if !f.Notice {
			n++
		}
	}
	return n
}

// audit lists what is not integrated: workloads first (Deployments, DaemonSets, Pods), then
// Mappings, in the API server's order.
func audit(ctx context.Context, c client.Client, cfg *inject.Config) ([]finding, error) {
	var found []finding
	var deployments appsv1.DeploymentList
	var daemonSets appsv1.DaemonSetList
	var pods corev1.PodList
	for _, l := range []client.ObjectList{&deployments, &daemonSets, &pods} {
		if err := listAll(ctx, c, l); err != nil {
			return nil, err
		}
	}
	var workloads []inject.Workload
	for i := range deployments.Items {
		workloads = append(workloads, inject.NewWorkload(&deployments.Items[i]))
	}
	for i := range daemonSets.Items {
		workloads = append(workloads, inject.NewWorkload(&daemonSets.Items[i]))
	}
	for i := range pods.Items {
		if len(pods.Items[i].OwnerReferences) == 0 { // the others' owners are listed
			workloads = append(workloads, inject.NewWorkload(&pods.Items[i]))
		}
	}
	m, unreadable := readMesh(ctx, c, cfg.IstioNamespace)
	nsLabels := map[string]map[string]string{}
	for _, w := range workloads {
		view := inject.MeshView{Mesh: m, Unavailable: unreadable}
		if lbls, ok := nsLabels[w.GetNamespace()]; ok {
			view.NamespaceLabels, view.NamespaceKnown = lbls, true
		} else if lbls, known, err := (apiNamespaces{c}).NamespaceLabels(ctx, w.GetNamespace()); err == nil && known {
			nsLabels[w.GetNamespace()] = lbls
			view.NamespaceLabels, view.NamespaceKnown = lbls, true
		}
		wcfg, _ := cfg.ForWorkload(view, w)
		meshFindings := inject.AuditMesh(w, wcfg, view)
		for _, f := range meshFindings {
			found = append(found, finding{w.Kind(), w.GetNamespace(), w.GetName(), f.Reason, f.Message, f.Notice})
		}
		if f, ok := inject.Audit(w, wcfg); ok && !(f.Reason == inject.AuditStaleConfig && explained(meshFindings)) {
			found = append(found, finding{w.Kind(), w.GetNamespace(), w.GetName(), f.Reason, f.Message, false})
		}
	}

	mappings, err := listMappings(ctx, c)
	if err != nil {
		return nil, err
	}
	lookup := cfg.Mapping.Lookup(ctx, apiNamespaces{c})
	for _, mp := range mappings {
		dec, err := mapping.Decide(mp.Object, &cfg.Mapping, lookup)
		if err != nil {
			return nil, fmt.Errorf("audit: looking up namespaces: %w", err)
		}
		if reason, ok := mapping.Audit(dec); ok {
			found = append(found, finding{"Mapping", mp.GetNamespace(), mp.GetName(), reason, dec.Message, false})
		}
	}
	return found, nil
}

// listAll lists every object of l's kind in all namespaces, a page at a time.
func listAll(ctx context.Context, c client.Client, l client.ObjectList) error {
	page := l.DeepCopyObject().(client.ObjectList) // empty: List replaces its items
	for cont := ""; ; {
		if err := c.List(ctx, page, client.Limit(500), client.Continue(cont)); err != nil {
			return fmt.Errorf("audit: listing %T: %w", l, err)
		}
		items, err := apimeta.ExtractList(page)
		if err != nil {
			return err
		}
		all, err := apimeta.ExtractList(l)
		if err != nil {
			return err
		}
		if err := apimeta.SetList(l, append(all, items...)); err != nil {
			return err
		}
		if cont = page.GetContinue(); cont == "" {
			return nil
		}
	}
}

func printTable(out io.Writer, findings []finding) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KIND\tNAMESPACE/NAME\tREASON\tWHY")
	for _, f := range findings {
		fmt.Fprintf(w, "%s\t%s/%s\t%s\t%s\n", f.Kind, f.Namespace, f.Name, f.Reason, f.Message)
	}
	return w.Flush()
}

func printJSON(out io.Writer, findings []finding) error {
	if findings == nil {
		findings = []finding{}
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(findings)
}

// listMappings reads Mappings at v2, the version Emissary 2.x and 3.x store (where tls may
// be a bool), falling back to v3alpha1; a cluster without the CRD has no Mappings.
func listMappings(ctx context.Context, c client.Client) ([]unstructured.Unstructured, error) {
	for _, version := range []string{"v2", "v3alpha1"} {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(schema.GroupVersionKind{Group: "getambassador.io", Version: version, Kind: "MappingList"})
		err := c.List(ctx, list)
		if err == nil {
			return list.Items, nil
		}
		if !apimeta.IsNoMatchError(err) {
			return nil, fmt.Errorf("audit: listing Mappings: %w", err)
		}
	}
	return nil, nil
}

// explained reports whether the mesh findings say why a sidecar differs from what the
// webhook renders now (then the generic stale-config says nothing more).
func explained(fs []inject.MeshFinding) bool {
	for _, f := range fs {
		if !f.Notice {
			return true
		}
	}
	return false
}
