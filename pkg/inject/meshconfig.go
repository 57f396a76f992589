package inject

import (
	"fmt"
	"maps"
	"strings"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/mesh"
)

// MeshView is what the webhook knows of the cluster's Istio when it admits one workload.
type MeshView struct {
	// Mesh is nil when the mesh could not be read; Unavailable then says why (no RBAC to
	// read Istio's objects, caches not synced yet).
	Mesh        *mesh.Mesh
	Unavailable string
	// NamespaceLabels are the labels of the workload's namespace; NamespaceKnown is false
	// when they could not be read.
	NamespaceLabels map[string]string
	NamespaceKnown  bool
}

// MeshNotes are what ForWorkload says: Warnings are for every admission (the sidecar may be
// wrong), Notices only when the stored object changes.
type MeshNotes struct {
	Warnings []string
	Notices  []string
	// Unavailable is set when the mesh could not be read at all: an existing injection
	// must then be kept (see KeepInjection).
	Unavailable bool
}

// ForWorkload is the configuration the sidecar of w is rendered from: c, with every Istio
// setting the configuration file does not set (hub, istioVersion, the discovery and CA
// addresses, trust domain, mesh and cluster IDs, jwtPolicy, proxy resources, pull policy,
// and the mesh config's proxyMetadata) taken from the revision that serves w, as Istio's
// own injector would render it. The revision is the configured `revision` (a revision or a
// tag), else the one Istio's injector webhooks select for w's namespace and pod labels.
// Where nothing serves w, or the mesh could not be read, c's own values apply and a warning
// names what was not found.
func (c *Config) ForWorkload(view MeshView, w Workload) (*Config, MeshNotes) {
	var notes MeshNotes
	ref := w.Kind() + " " + objectRef(w) + ": "
	warn := func(format string, args ...any) {
		notes.Warnings = append(notes.Warnings, ref+fmt.Sprintf(format, args...))
	}
	defaults := func() string {
		return fmt.Sprintf("rendered %s from the configuration's defaults (%s, discovery address %s)", ProxyContainerName, c.Image(), c.DiscoveryAddress)
	}
	m := view.Mesh
	switch {
	case m == nil:
		notes.Unavailable = true
		warn("could not read the Istio mesh (%s); %s", view.Unavailable, defaults())
		return c, notes
	case !view.NamespaceKnown && c.Revision == "":
		notes.Unavailable = true
		warn("could not read the labels of namespace %s, which say which Istio revision serves it; %s", w.GetNamespace(), defaults())
		return c, notes
	}
	t := w.Template()
	var s mesh.Serving
	if c.Revision != "" {
		rev, tag, ok := m.Lookup(c.Revision)
		if !ok {
			warn("the configured revision %q is neither a revision nor a tag of the cluster's Istio (%s); %s", c.Revision, m.Describe(), defaults())
			return c, notes
		}
		s = mesh.Serving{Revision: rev, Tag: tag, By: "the configuration's revision"}
	} else {
		if name, where := m.UnknownRevision(view.NamespaceLabels, t.Labels); name != "" {
			warn("its %s label %s=%s names no revision or tag of the cluster's Istio (%s); %s", where, mesh.LabelRev, name, m.Describe(), defaults())
			return c, notes
		}
		var ok bool
		if s, ok = m.Select(view.NamespaceLabels, t.Labels); !ok {
			if m.Empty() {
				// A cluster without Istio (a demo, a test): said when the sidecar is written,
				// not on every re-apply.
				notes.Notices = append(notes.Notices, ref+m.Describe()+"; "+defaults())
			} else {
				warn("no Istio revision serves namespace %s (label it %s=<revision or tag>, or set the configuration's revision) and there is no default revision (%s); %s",
					w.GetNamespace(), mesh.LabelRev, m.Describe(), defaults())
			}
			return c, notes
		}
	}
	for _, p := range s.Revision.Problems {
		warn("Istio revision %s: %s; Istio's defaults apply to what it would say", s.Revision.Name, p)
	}
	cc, releaseWarning := c.withProxy(s.Proxy(m.Namespace, t.Annotations))
	if releaseWarning != "" {
		warn("%s", releaseWarning)
	}
	cc.meshSource, cc.serving = "Istio revision "+s.Name(), &s
	if s.Default {
		notes.Notices = append(notes.Notices, ref+fmt.Sprintf("namespace %s is not labelled for an Istio revision: rendered %s for the default revision %s", w.GetNamespace(), ProxyContainerName, s.Name()))
	}
	return cc, notes
}

// withProxy is a copy of c with every key the file did not set taken from p.
func (c *Config) withProxy(p mesh.Proxy) (*Config, string) {
	cc := *c
	cc.explicit = c.explicit
	set := func(key string, field *string, value string) {
		if !c.explicit[key] && value != "" {
			*field = value
		}
	}
	var warning string
	if !c.explicit["hub"] && !c.explicit["istioVersion"] && p.Image != "" {
		if hub, ok := strings.CutSuffix(p.Image, "/proxyv2:"+p.ImageTag); ok && p.ImageTag != "" {
			cc.Hub, cc.IstioVersion = hub, p.ImageTag // the common case: hashes as a file saying so would
		} else {
			cc.image, cc.IstioVersion = p.Image, p.ImageTag
		}
		if r, err := parseIstioRelease(p.ImageTag); err == nil {
			cc.release = r
		} else {
			warning = fmt.Sprintf("the proxy image %s of Istio revision %s names no Istio release (%v): its command line is rendered for Istio %s", p.Image, p.Revision, err, c.release)
			cc.IstioVersion = c.IstioVersion
		}
	}
	set("discoveryAddress", &cc.DiscoveryAddress, p.DiscoveryAddress)
	switch {
	case c.explicit["caAddress"]:
	case c.explicit["discoveryAddress"]:
		cc.CAAddress = cc.DiscoveryAddress // the file's rule: the CA is istiod
	default:
		set("caAddress", &cc.CAAddress, p.CAAddress)
	}
	set("trustDomain", &cc.TrustDomain, p.TrustDomain)
	set("meshID", &cc.MeshID, p.MeshID)
	set("clusterID", &cc.ClusterID, p.ClusterID)
	if p.JWTPolicy == JWTPolicyThirdParty || p.JWTPolicy == JWTPolicyFirstParty && !cc.release.atLeast(releaseNoFirstPartyJWT) {
		set("jwtPolicy", &cc.JWTPolicy, p.JWTPolicy)
	}
	if !c.explicit["imagePullPolicy"] && p.ImagePullPolicy != "" {
		cc.ImagePullPolicy = p.ImagePullPolicy
	}
	if !c.explicit["proxyResources"] && p.Resources != nil {
		cc.ProxyResources = *p.Resources.DeepCopy()
	}
	cc.proxyMetadata = maps.Clone(p.ProxyMetadata)
	return &cc, warning
}

// Add puts the notes on res when its sidecar was rendered from the mesh view (sidecar mode):
// Istio's injector renders the istio-injector mode's proxy itself.
func (n MeshNotes) Add(res *Result) {
	if res.Status == nil || res.Status.mode() != ModeSidecar || res.Reason == ReasonKept {
		return
	}
	res.Warnings = append(res.Warnings, n.Warnings...)
	res.Notices = append(res.Notices, n.Notices...)
}

// MeshSource names the Istio revision the configuration was completed from ("" when none).
func (c *Config) MeshSource() string { return c.meshSource }
