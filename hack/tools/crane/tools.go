//go:build tools

// Package tools pins the crane CLI this module builds.
package tools

import _ "github.com/google/go-containerregistry/cmd/crane"
