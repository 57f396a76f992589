package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newAuditCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "audit",
		Short: "Report Deployments and Mappings in a cluster that the webhook would change",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("audit: not implemented yet")
		},
	}
}
