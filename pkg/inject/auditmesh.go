package inject

import (
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/mesh"
)

// Audit reasons that compare a stored sidecar with the cluster's Istio (AuditMesh).
const (
	// AuditUnknownRevision: the workload's namespace or pod names (istio.io/rev) a revision or
	// tag the cluster does not have.
	AuditUnknownRevision = "unknown-revision"
	// AuditUnsupportedSkew: the stored proxy's release is outside what Istio supports against
	// the serving revision's control plane (newer, or more than one release older).
	AuditUnsupportedSkew = "unsupported-skew"
	// AuditOlderProxy (a notice): the stored proxy is one release older than its control
	// plane, which Istio supports; a rollout restart brings it level.
	AuditOlderProxy = "older-proxy"
	// AuditMovedRevision: the stored proxy talks to another istiod than the serving
	// revision's (a tag was moved, or the namespace relabelled).
	AuditMovedRevision = "moved-revision"
)

// MeshFinding is what AuditMesh says; a Notice is no fault.
type MeshFinding struct {
	Finding
	Notice bool
}

// AuditMesh compares the stored workload w with the cluster's Istio: cfg must be what
// ForWorkload made for w from view. It names a revision w asks for that does not exist, and
// for a sidecar the webhook rendered in sidecar mode, a proxy release outside Istio's skew
// against the serving revision and a discovery address that is not the serving revision's.
func AuditMesh(w Workload, cfg *Config, view MeshView) []MeshFinding {
	m := view.Mesh
	if m == nil {
		return nil
	}
	t := w.Template()
	var out []MeshFinding
	add := func(notice bool, reason, format string, args ...any) {
		out = append(out, MeshFinding{Finding{reason, fmt.Sprintf(format, args...)}, notice})
	}
	if cfg.Revision == "" {
		if name, where := m.UnknownRevision(view.NamespaceLabels, t.Labels); name != "" {
			add(false, AuditUnknownRevision, "its %s label %s=%s names no revision or tag of the cluster's Istio (%s): Istio injects nothing for it, and the webhook renders from its defaults",
				where, mesh.LabelRev, name, m.Describe())
			return out
		}
	}
	st, err := ParseStatus(t)
	s := cfg.serving
	proxy := storedProxy(t)
	if st == nil || err != nil || st.mode() != ModeSidecar || s == nil || proxy == nil {
		return out
	}
	restart := howToReadmit(w)
	if tag := referenceTag(proxy.Image); tag != "" {
		pr, okP := mesh.ParseRelease(tag)
		cr, okC := mesh.ParseRelease(s.Revision.Values.Tag)
		if okP && okC {
			switch skew, why := mesh.CheckSkew(pr, cr); skew {
			case mesh.SkewUnsupported:
				add(false, AuditUnsupportedSkew, "%s (%s) against Istio revision %s: %s; then %s", ProxyContainerName, proxy.Image, s.Name(), why, restart)
			case mesh.SkewOlder:
				add(true, AuditOlderProxy, "%s (%s) against Istio revision %s: %s: %s", ProxyContainerName, proxy.Image, s.Name(), why, restart)
			}
		}
	}
	if addr := storedDiscoveryAddress(proxy); addr != "" && addr != cfg.DiscoveryAddress {
		add(false, AuditMovedRevision, "%s talks to %s, but Istio revision %s, which serves it now, is %s (a moved tag, or a relabelled namespace): %s",
			ProxyContainerName, addr, s.Name(), cfg.DiscoveryAddress, restart)
	}
	return out
}

// storedProxy is the istio-proxy container (or native sidecar) of t, nil when none.
func storedProxy(t *corev1.PodTemplateSpec) *corev1.Container {
	for _, cs := range [][]corev1.Container{t.Spec.Containers, t.Spec.InitContainers} {
		if i := ContainerIndex(cs, ProxyContainerName); i >= 0 {
			return &cs[i]
		}
	}
	return nil
}

// storedDiscoveryAddress is the discovery address the stored proxy uses: PROXY_CONFIG's, or
// the seed's --discoveryAddress flag (Istio 1.5).
func storedDiscoveryAddress(c *corev1.Container) string {
	if i := indexEnv(c.Env, envProxyConfig); i >= 0 {
		var pc struct {
			DiscoveryAddress string `json:"discoveryAddress"`
		}
		if json.Unmarshal([]byte(c.Env[i].Value), &pc) == nil {
			return pc.DiscoveryAddress
		}
	}
	for i, a := range c.Args {
		if a == "--discoveryAddress" && i+1 < len(c.Args) {
			return c.Args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--discoveryAddress="); ok {
			return v
		}
	}
	return ""
}

// referenceTag is the tag of an image reference ("" without one).
func referenceTag(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	return strings.TrimPrefix(ref[len(ImageRepository(ref)):], ":")
}
