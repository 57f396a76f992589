//go:build tools

// Package tools pins the cyclonedx-gomod CLI this module builds.
package tools

import _ "github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod"
