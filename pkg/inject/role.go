package inject

import (
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Role is what a container that runs Emissary's image does. Emissary's image holds more
// than the edge: its chart and manifests start other programs from it, each with its own
// command, and only the edge (Envoy plus Emissary's control loop) uses Istio's certificates.
type Role string

// Roles, named after what they run. A role other than RoleEdge is also the Reason a workload
// is skipped with.
const (
	// RoleEdge: no command (the image's entrypoint, entrypoint.sh, which execs `busyambassador
	// entrypoint`), or the `entrypoint` program itself.
	RoleEdge Role = "edge"
	// RoleAPIExt: `apiext`, the CRD conversion webhook (emissary-crds.yaml's emissary-apiext
	// Deployment; in Emissary 4.x its own image, ghcr.io/emissary-ingress/apiext).
	RoleAPIExt Role = "apiext"
	// RoleConsulConnector: `consul_connect_integration` (docs/yaml/consul).
	RoleConsulConnector Role = "consul-connector"
	// RoleAgent: `agent`, the Ambassador Cloud agent (the 2.x chart's agent Deployment; in 3.x
	// its own image, docker.io/ambassador/ambassador-agent).
	RoleAgent Role = "agent"
	// RoleHelper: any other program (kubestatus, aes-injector, a shell command...).
	RoleHelper Role = "helper"
)

// programRoles maps the programs Emissary's image runs, as busyambassador dispatches them
// (cmd/busyambassador: entrypoint, kubestatus, agent, apiext, version...), to their role.
var programRoles = map[string]Role{
	"entrypoint":                 RoleEdge,
	"entrypoint.sh":              RoleEdge, // the image's ENTRYPOINT, bash /buildroot/ambassador/python/entrypoint.sh
	"apiext":                     RoleAPIExt,
	"consul_connect_integration": RoleConsulConnector,
	"agent":                      RoleAgent,
}

// helperImages are the images (emissaryImages patterns) Emissary ships its helpers in:
// ghcr.io/emissary-ingress/apiext (4.x) and docker.io/ambassador/ambassador-agent (3.x).
var helperImages = map[string]Role{
	"emissary-ingress/apiext": RoleAPIExt,
	"ambassador-agent":        RoleAgent,
}

// helperImagePattern is the helperImages pattern that matches ref, or "".
func helperImagePattern(ref string) string {
	for p := range helperImages {
		if matchImage([]string{p}, ref) {
			return p
		}
	}
	return ""
}

var shells = map[string]bool{"sh": true, "bash": true, "dash": true, "ash": true}

// ContainerRole says what c runs when its image is Emissary's, and the program (""
// when it runs the image's entrypoint). It follows the command the way the kernel and
// busyambassador do: a shell running a script runs that script, `busyambassador X` runs X.
// Arguments without a command go to the entrypoint, which is the edge.
func ContainerRole(c *corev1.Container) (Role, string) {
	if len(c.Command) == 0 {
		return RoleEdge, ""
	}
	argv := append(append([]string(nil), c.Command...), c.Args...)
	prog, rest := path.Base(argv[0]), argv[1:]
	for {
		switch {
		case shells[prog] && len(rest) > 0 && !strings.HasPrefix(rest[0], "-"):
			prog, rest = path.Base(rest[0]), rest[1:]
			continue
		case prog == "busyambassador" && len(rest) > 0:
			prog, rest = rest[0], rest[1:]
			continue
		}
		break
	}
	if r, ok := programRoles[prog]; ok {
		return r, prog
	}
	return RoleHelper, prog
}

// describe is a role in words, for messages.
func (r Role) describe() string {
	switch r {
	case RoleAPIExt:
		return "Emissary's CRD conversion webhook"
	case RoleConsulConnector:
		return "Emissary's Consul connector"
	case RoleAgent:
		return "the Ambassador Cloud agent"
	case RoleEdge:
		return "Emissary's edge"
	}
	return "a helper program"
}
