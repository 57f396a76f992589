// Command webhook is the emissary-istio-webhook binary: the admission server (`serve`, the
// default), the offline injector (`inject`), a cluster audit (`audit`), the chart's `helm test`
// (`selftest`) and `version`.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	serve := newServeCommand()
	root := &cobra.Command{
		Use:   "webhook",
		Short: "Mutating admission webhook that integrates Emissary-ingress with Istio",
		Long: `emissary-istio-webhook injects the istio-proxy sidecar into Emissary Deployments so
Emissary can use Istio's mTLS certificates, and defaults "tls: istio-upstream" on Mappings
whose upstream is in an Istio-meshed namespace. Without a subcommand it runs "serve".`,
		SilenceUsage: true,
		// Flags of the default subcommand are accepted on the root too.
		RunE: serve.RunE,
	}
	root.Flags().AddFlagSet(serve.Flags())
	root.AddCommand(serve, newInjectCommand(), newAuditCommand(), newSelftestCommand(), newVersionCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), inject.Version)
		},
	}
}
