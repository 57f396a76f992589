package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mapping"
)

// errFindings makes `webhook audit` exit non-zero when something would change, like
// `kubectl diff`, so it can gate a pipeline or follow an outage.
var errFindings = errors.New("audit: some objects are not as the webhook would store them")

func newAuditCommand() *cobra.Command {
	var kubeconfig, configPath string
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Report Deployments and Mappings in a cluster that the webhook would change",
		Long: `audit reads every Deployment and Mapping in the cluster and runs them through the
webhook's own decisions, listing each one the webhook would change if it were applied
again now: Emissary Deployments stored without the sidecar (or with an outdated one), and
Mappings to meshed upstreams stored without tls — for example after an outage with
failurePolicy Ignore, or objects created before the webhook was installed. It changes
nothing. It exits 1 when it found something.

To fix what it lists, send each object through the webhook again: kubectl apply
--server-side (a client-side apply of an unchanged file sends no request), or kubectl
rollout restart for a Deployment.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := inject.LoadConfig(configPath)
			if err != nil {
				return err
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
			found, err := audit(cmd.Context(), c, cfg, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			if found > 0 {
				cmd.SilenceErrors = true
				fmt.Fprintf(cmd.ErrOrStderr(), "%d object(s) would change\n", found)
				return errFindings
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "every Deployment and Mapping is as the webhook would store it")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: the usual kubectl rules)")
	f.StringVar(&configPath, "config", "", "configuration file (defaults apply when empty)")
	return cmd
}

// audit lists what would change and returns how many objects that is.
func audit(ctx context.Context, c client.Client, cfg *inject.Config, out io.Writer) (int, error) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KIND\tNAMESPACE/NAME\tREASON\tWHAT THE WEBHOOK WOULD DO")
	found := 0

	var deployments appsv1.DeploymentList
	if err := c.List(ctx, &deployments); err != nil {
		return 0, fmt.Errorf("audit: listing Deployments: %w", err)
	}
	for i := range deployments.Items {
		d := &deployments.Items[i]
		if res := inject.Deployment(d, cfg); res.Changed() {
			found++
			fmt.Fprintf(w, "Deployment\t%s/%s\t%s\t%s\n", d.Namespace, d.Name, res.Reason, res.Message)
		}
	}

	mappings, err := listMappings(ctx, c)
	if err != nil {
		return 0, err
	}
	lookup := cfg.Mapping.Lookup(ctx, apiNamespaces{c})
	for _, m := range mappings {
		dec, err := mapping.Decide(m.Object, &cfg.Mapping, lookup)
		if err != nil {
			return 0, fmt.Errorf("audit: looking up namespaces: %w", err)
		}
		if dec.Changed() {
			found++
			fmt.Fprintf(w, "Mapping\t%s/%s\t%s\t%s\n", m.GetNamespace(), m.GetName(), dec.Reason, dec.Message)
		}
	}
	return found, w.Flush()
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
