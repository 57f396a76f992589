package mesh

import (
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Proxy is what a revision's injector renders into istio-proxy, each value computed as
// Istio's injector computes it at the pinned release (pkg/kube/inject and the istio-discovery
// chart's files/injection-template.yaml). "" (or nil) means the revision does not say, and the
// caller keeps its own default.
type Proxy struct {
	// Revision is the revision rendered for; Tag the tag it was reached by ("" when none,
	// and always from Revision.Proxy: Serving.Proxy sets it).
	Revision string
	Tag      string

	// Image is the proxy image; ImageTag its tag, the Istio release the proxy runs.
	Image    string
	ImageTag string

	DiscoveryAddress string
	CAAddress        string
	TrustDomain      string
	MeshID           string
	ClusterID        string
	JWTPolicy        string
	ImagePullPolicy  corev1.PullPolicy
	ProxyMetadata    map[string]string
	Resources        *corev1.ResourceRequirements
}

// Proxy is what r renders for a pod whose annotations are podAnnotations (which may pick
// the image: sidecar.istio.io/proxyImage, sidecar.istio.io/proxyImageType). istioNamespace
// is the Mesh's Namespace, used where the values do not name one.
func (r *Revision) Proxy(istioNamespace string, podAnnotations map[string]string) Proxy {
	v, mc := r.Values, r.Mesh
	p := Proxy{
		Revision:        r.Name,
		ClusterID:       v.ClusterName,
		JWTPolicy:       v.JWTPolicy,
		ImagePullPolicy: corev1.PullPolicy(v.ImagePullPolicy),
		ProxyMetadata:   maps.Clone(mc.ProxyMetadata),
	}
	if v.Resources != nil {
		p.Resources = v.Resources.DeepCopy()
	}
	p.Image, p.ImageTag = ProxyImage(v, mc, podAnnotations)

	ns := v.IstioNamespace
	if ns == "" {
		ns = istioNamespace
	}
	// The chart writes "revision" into the values ("" for the default revision); a revision
	// whose values could not be read is named by its webhook's label.
	rev := v.Revision
	if rev == "" && r.Name != DefaultRevision && len(r.Problems) > 0 {
		rev = r.Name
	}
	istiod := "istiod"
	if rev != "" && rev != DefaultRevision {
		istiod += "-" + rev
	}
	istiod += "." + ns + ".svc:15012"
	// The mesh config's discoveryAddress, else istiod's own default (istiod[-rev]).
	p.DiscoveryAddress = mc.DiscoveryAddress
	if p.DiscoveryAddress == "" {
		p.DiscoveryAddress = istiod
	}
	// The injection template: CA_ADDR is global.caAddress, else istiod[-<values.revision>].
	p.CAAddress = v.CAAddress
	if p.CAAddress == "" {
		p.CAAddress = istiod
	}
	// TRUST_DOMAIN: the mesh config's, else global.trustDomain; ISTIO_META_MESH_ID:
	// global.meshID, else the trust domain.
	p.TrustDomain = mc.TrustDomain
	if p.TrustDomain == "" {
		p.TrustDomain = v.TrustDomain
	}
	p.MeshID = v.MeshID
	if p.MeshID == "" {
		p.MeshID = p.TrustDomain
	}
	return p
}

// Known image types (pkg/kube/inject: ImageTypeDefault, KnownImageTypes).
const (
	imageTypeDefault    = "default"
	imageTypeDistroless = "distroless"
	imageTypeDebug      = "debug"
)

// ProxyImage is the image Istio's injector renders for values v and mesh config mc, and its
// tag: the injection template takes sidecar.istio.io/proxyImage (else global.proxy.image)
// verbatim when it contains a "/", and otherwise pkg/kube/inject's ProxyImage:
// <global.hub>/<global.proxy.image or proxyv2>:<global.tag> with the image type (the mesh
// config's defaultConfig.image.imageType when set, else global.variant, else the pod's
// sidecar.istio.io/proxyImageType) replacing a known type suffix of the tag. It is "" when
// the values name no hub or no tag.
func ProxyImage(v Values, mc MeshConfig, podAnnotations map[string]string) (image, tag string) {
	name := v.ProxyImage
	if a, ok := podAnnotations[AnnotationProxyImage]; ok {
		name = a
	}
	if strings.Contains(name, "/") {
		return name, referenceTag(name)
	}
	imageType := v.Variant
	if mc.HasImage {
		imageType = mc.ImageType
	}
	if v.ProxyImage == "" {
		name = "proxyv2"
	} else {
		name = v.ProxyImage
	}
	if it, ok := podAnnotations[AnnotationProxyImageType]; ok {
		imageType = it
	}
	if v.Hub == "" || v.Tag == "" {
		return "", ""
	}
	tag = withImageType(v.Tag, imageType)
	return v.Hub + "/" + name + ":" + tag, tag
}

// withImageType is pkg/kube/inject's updateImageTypeIfPresent.
func withImageType(tag, imageType string) string {
	if imageType == "" {
		return tag
	}
	for _, t := range []string{imageTypeDistroless, imageTypeDebug} {
		if strings.HasSuffix(tag, "-"+t) {
			tag = tag[:len(tag)-len(t)-1]
			break
		}
	}
	if imageType == imageTypeDefault {
		return tag
	}
	return tag + "-" + imageType
}

// referenceTag is the tag of an image reference ("" when it has none): what follows the last
// ":" after the last "/", before any digest.
func referenceTag(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	if i := strings.LastIndex(last, ":"); i >= 0 {
		return last[i+1:]
	}
	return ""
}
