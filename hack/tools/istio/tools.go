//go:build tools

// Package tools pins the Istio commands this module builds: istiod (pilot-discovery) and the
// sidecar's agent (pilot-agent), for the real-Istio test suite.
package tools

import (
	_ "istio.io/istio/pilot/cmd/pilot-agent"
	_ "istio.io/istio/pilot/cmd/pilot-discovery"
)
