package inject

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Mode is how a workload gets its istio-proxy.
type Mode string

const (
	// ModeSidecar: the webhook writes the istio-proxy container itself (the recipe of
	// Emissary's Istio integration guide in its 1.x version), rendered for the configured
	// Istio release. The default.
	ModeSidecar Mode = "sidecar"
	// ModeIstioInjector: Istio's own sidecar injector renders istio-proxy when the Pod is
	// created; the webhook writes the pod metadata that steers it and Emissary's side of the
	// certificate sharing (Emissary 2.x and 3.x's guide, Istio 1.10 and later).
	ModeIstioInjector Mode = "istio-injector"
)

// Modes lists the valid modes, in the order docs/modes.md documents them.
var Modes = []Mode{ModeSidecar, ModeIstioInjector}

// AnnotationMode (on the workload or its pod template; the template's wins) overrides the
// configured mode for one workload.
const AnnotationMode = "emissary-istio.io/mode"

// Istio's pod metadata that the istio-injector mode writes (Istio's injection template and
// pkg/kube/inject read them).
const (
	LabelIstioRev                    = "istio.io/rev"
	AnnotationProxyConfig            = "proxy.istio.io/config"
	AnnotationUserVolumeMount        = "sidecar.istio.io/userVolumeMount"
	AnnotationIncludeInboundPorts    = "traffic.sidecar.istio.io/includeInboundPorts"
	AnnotationIncludeOutboundIPRange = "traffic.sidecar.istio.io/includeOutboundIPRanges"
)

// releaseIstioInjector is the first release whose injector the istio-injector mode steers:
// pods select it by label (sidecar.istio.io/inject, istio.io/rev) and its Envoy no longer
// uses hot restart (istio/istio#31321), so Emissary's Envoy needs no other base ID. Emissary's
// own guide asks for 1.10 or later too.
var releaseIstioInjector = istioRelease{1, 10}

func parseMode(s string) (Mode, error) {
	for _, m := range Modes {
		if string(m) == s {
			return m, nil
		}
	}
	return "", fmt.Errorf("must be one of %s, got %q", modeList(), s)
}

func modeList() string {
	names := make([]string, len(Modes))
	for i, m := range Modes {
		names[i] = string(m)
	}
	return strings.Join(names, ", ")
}

// modeChoice is the mode one workload gets, and why.
type modeChoice struct {
	Mode Mode
	// Found lists the pieces of an Istio-injector setup the user wrote by hand (Emissary's
	// 2.x/3.x guide) that made the choice, when the configuration says sidecar: such a
	// workload is completed, never switched.
	Found    []string
	Warnings []string
}

// chooseMode decides the mode of a workload of kind with annotations objAnn whose pod
// template t carries no earlier injection (it was stripped): the mode annotation (template
// first), else a hand-written Istio-injector setup, else cfg's mode.
func chooseMode(kind string, objAnn map[string]string, t *corev1.PodTemplateSpec, cfg *Config) modeChoice {
	var c modeChoice
	for _, where := range []struct {
		what string
		ann  map[string]string
	}{{"pod template", t.Annotations}, {kind, objAnn}} {
		v, ok := where.ann[AnnotationMode]
		if !ok {
			continue
		}
		m, err := parseMode(v)
		if err != nil {
			c.Warnings = append(c.Warnings, fmt.Sprintf("ignoring %s annotation %s=%q: not one of %s", where.what, AnnotationMode, v, modeList()))
			continue
		}
		if m == ModeIstioInjector && !cfg.release.atLeast(releaseIstioInjector) {
			c.Warnings = append(c.Warnings, fmt.Sprintf("ignoring %s annotation %s=%q: it needs Istio %s or later, and istioVersion is %s", where.what, AnnotationMode, v, releaseIstioInjector, cfg.IstioVersion))
			continue
		}
		c.Mode = m
		if found := istioInjectorSetup(t); m == ModeSidecar && len(found) > 0 {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s annotation %s=%q: the webhook's %s keeps Istio's injector out, so %s have no effect",
				where.what, AnnotationMode, v, ProxyContainerName, strings.Join(found, " and ")))
		}
		return c
	}
	c.Mode = cfg.Mode
	if found := istioInjectorSetup(t); c.Mode == ModeSidecar && len(found) > 0 && cfg.release.atLeast(releaseIstioInjector) {
		c.Mode, c.Found = ModeIstioInjector, found
	}
	return c
}

// istioInjectorSetup names the pieces of Emissary's Istio-injector setup in t's annotations:
// what tells Istio's proxy to write certificates (OUTPUT_CERTS) and where (the istio-certs
// mount). Either one is a user's decision that Istio's injector renders the proxy.
func istioInjectorSetup(t *corev1.PodTemplateSpec) []string {
	var found []string
	if v, ok := t.Annotations[AnnotationProxyConfig]; ok {
		if pc, err := parseProxyConfig(v); err == nil && proxyMetadata(pc)["OUTPUT_CERTS"] != nil {
			found = append(found, AnnotationProxyConfig+" with proxyMetadata.OUTPUT_CERTS")
		}
	}
	if _, ok := t.Annotations[AnnotationUserVolumeMount]; ok {
		found = append(found, AnnotationUserVolumeMount)
	}
	return found
}

// modeHash is Status.ConfigHash for mode: a hash of exactly the settings that shape what mode
// writes. In sidecar mode, SidecarHash (and nativeSidecar when on: unchanged hashes keep
// upgrades from restarting pods); in istio-injector mode only the revision matters.
func (c *Config) modeHash(m Mode) string {
	if m == ModeSidecar {
		if !c.NativeSidecar {
			return c.SidecarHash()
		}
		return hashOf(struct{ Sidecar, Native string }{c.SidecarHash(), "native"})
	}
	return hashOf(struct{ Mode, Revision string }{string(m), c.Revision})
}

func hashOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil { // cannot happen: strings only
		panic(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// injectMode renders the integration of mode into t (see Inject and injectIstioInjector).
func injectMode(t *corev1.PodTemplateSpec, mode Mode, container, workload string, cfg *Config) (*Status, []string, error) {
	if mode == ModeIstioInjector {
		return injectIstioInjector(t, container, cfg)
	}
	return Inject(t, container, workload, cfg)
}

// describe names what mode renders, for messages: the proxy and its image, or the setup
// for Istio's injector and its revision.
func (m Mode) describe(cfg *Config) string {
	if m == ModeIstioInjector {
		rev := "default"
		if cfg.Revision != "" {
			rev = cfg.Revision
		}
		return fmt.Sprintf("the pod metadata for Istio's sidecar injector (revision %s)", rev)
	}
	return fmt.Sprintf("%s (%s)", ProxyContainerName, cfg.Image())
}

// hostNetworkWhy is why a hostNetwork pod is skipped in istio-injector mode, opted in or not
// (detect skips it in sidecar mode unless opted in).
func (c modeChoice) hostNetworkWhy() string {
	return "it runs with hostNetwork: true, and Istio's sidecar injector does not inject such pods (its iptables rules would be the node's)"
}

// completed is the notice for a hand-written Istio-injector setup the webhook completed.
func (c modeChoice) completed(st *Status) string {
	return fmt.Sprintf("found Emissary's Istio-injector setup (%s): completed it for Istio's own sidecar injector instead of adding the webhook's %s (set %s: %s to change that); added %s",
		strings.Join(c.Found, ", "), ProxyContainerName, AnnotationMode, ModeSidecar, st.addedSummary())
}

// removed names what removing an injection of mode takes away, for messages.
func (m Mode) removed() string {
	if m == ModeIstioInjector {
		return "the pod metadata for Istio's sidecar injector"
	}
	return ProxyContainerName
}

// updated is the message of a re-render: a switch of mode says so.
func updated(old *Status, mode Mode, what, ref, container string) string {
	if from := old.mode(); from != mode {
		return fmt.Sprintf("switched %s from %s to %s mode: removed what %s mode had added, injected %s for container %q", ref, from, mode, from, what, container)
	}
	return fmt.Sprintf("updated %s in %s for container %q to the current configuration", what, ref, container)
}

// mode is the mode s was rendered for ("" is sidecar: statuses from before modes existed).
func (s *Status) mode() Mode {
	if s.Mode == "" {
		return ModeSidecar
	}
	return s.Mode
}
