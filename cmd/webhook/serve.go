package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/emissary-istio/emissary-istio-webhook/certs/selfsigned"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mutate"
)

func newServeCommand() *cobra.Command {
	var (
		opts       mutate.Options
		configPath string
		zapOpts    zap.Options
		selfSigned selfSignedOptions
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the admission webhook server (the default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
			cfg, err := inject.LoadConfig(configPath)
			if err != nil {
				return err
			}
			opts.Config = cfg
			restCfg, err := ctrl.GetConfig()
			if err != nil {
				return fmt.Errorf("serve: kubernetes client configuration: %w", err)
			}
			var keeper *selfsigned.Keeper
			if selfSigned.enabled {
				keeperOpts, err := selfSigned.keeperOptions(opts.CertDir)
				if err != nil {
					return err
				}
				// Before the server: it reads the certificate directory when it starts.
				if keeper, err = selfsigned.New(restCfg, keeperOpts, ctrl.Log.WithName("self-signed")); err != nil {
					return fmt.Errorf("serve: %w", err)
				}
			}
			srv, err := mutate.NewServer(restCfg, opts)
			if err != nil {
				return err
			}
			if keeper != nil {
				if err := srv.Manager.Add(keeper); err != nil {
					return err
				}
				if err := srv.Manager.AddReadyzCheck("ca-bundle", keeper.Ready); err != nil {
					return err
				}
			}
			ctrl.Log.Info("starting", "version", inject.Version, "port", opts.Port,
				"istioImage", cfg.Image(), "configHash", cfg.SidecarHash())
			return srv.Start(ctrl.SetupSignalHandler())
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Host, "host", "", "address the HTTPS server listens on (all when empty)")
	f.IntVar(&opts.Port, "port", 9443, "port the HTTPS server listens on")
	f.StringVar(&opts.CertDir, "cert-dir", "/etc/webhook/certs", "directory with tls.crt and tls.key, reloaded when they change")
	f.StringVar(&configPath, "config", "", "configuration file (defaults apply when empty)")
	f.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8080", "Prometheus metrics listener; 0 disables it")
	f.StringVar(&opts.HealthAddr, "health-probe-bind-address", ":8081", "/healthz and /readyz listener; 0 disables it")
	f.DurationVar(&opts.ShutdownDelay, "shutdown-delay", 0,
		"on SIGTERM, how long to keep serving with /readyz failing before stopping, so that the replica leaves the Service's endpoints first (at least the readiness probe's periodSeconds x failureThreshold, plus a second or two)")
	f.DurationVar(&opts.ShutdownTimeout, "shutdown-timeout", 30*time.Second,
		"after --shutdown-delay, how long to wait for the reviews in flight to be answered")
	selfSigned.bindFlags(f)
	logFlags := flag.NewFlagSet("log", flag.ContinueOnError)
	zapOpts.BindFlags(logFlags)
	f.AddGoFlagSet(logFlags)
	return cmd
}
