package inject

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/mapping"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mesh"
)

// Config file identity. The file is versioned so that its schema can change later without
// silently misreading old files.
const (
	ConfigAPIVersion = "emissary-istio.io/v1alpha1"
	ConfigKind       = "WebhookConfig"
)

// Defaults. The Istio version is a current release; addresses are istiod's (the seed's
// istio-pilot is gone since Istio 1.6).
const (
	DefaultHub          = "docker.io/istio"
	DefaultIstioVersion = "1.29.1"
	DefaultTrustDomain  = "cluster.local"
	DefaultMeshID       = "cluster.local"
	DefaultClusterID    = "Kubernetes"

	JWTPolicyThirdParty = "third-party-jwt"
	JWTPolicyFirstParty = "first-party-jwt"
)

// Config is the webhook's configuration file (YAML), versioned.
//
// Use DefaultConfig, ParseConfig or LoadConfig to get one: they apply the defaults and
// compile the namespace selectors. A Config is read-only once loaded and safe to share.
// The file is one document with one strict decoder and one Validate that reports every
// problem at once; its `mapping` section is pkg/mapping's Config.
type Config struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`

	// Mode is how Emissary gets its istio-proxy (mode.go); a workload may override it.
	Mode Mode `json:"mode"`
	// NativeSidecar puts the sidecar mode's istio-proxy among the init containers with
	// restartPolicy Always (native.go).
	NativeSidecar bool `json:"nativeSidecar"`

	// IstioNamespace is where Istio's control plane lives: the mesh view reads its
	// revisions' ConfigMaps there (pkg/mesh).
	IstioNamespace string `json:"istioNamespace"`

	// Sidecar (istio-proxy) settings. Those Istio decides (hub, istioVersion, the
	// addresses, trustDomain, meshID, clusterID, jwtPolicy, proxyResources,
	// imagePullPolicy) are taken from the revision serving the workload (ForWorkload)
	// unless the file sets them: the defaults below are for clusters without a readable Istio.
	Hub              string                      `json:"hub"`
	IstioVersion     string                      `json:"istioVersion"`
	Revision         string                      `json:"revision"`
	DiscoveryAddress string                      `json:"discoveryAddress"`
	CAAddress        string                      `json:"caAddress"`
	TrustDomain      string                      `json:"trustDomain"`
	MeshID           string                      `json:"meshID"`
	ClusterID        string                      `json:"clusterID"`
	JWTPolicy        string                      `json:"jwtPolicy"`
	ProxyRunAsUser   *int64                      `json:"proxyRunAsUser"`
	ProxyResources   corev1.ResourceRequirements `json:"proxyResources"`
	ImagePullPolicy  corev1.PullPolicy           `json:"imagePullPolicy"`

	// EmissaryImages are the image patterns that make a workload Emissary's (image.go).
	EmissaryImages []string `json:"emissaryImages"`

	// Mapping defaulting settings, read by pkg/mapping.
	Mapping mapping.Config `json:"mapping"`

	release istioRelease // of IstioVersion, parsed by Validate

	// explicit names the keys the file set (applyDefaults records them): those win over what
	// the mesh says.
	explicit map[string]bool
	// Read from the serving revision by ForWorkload: the full proxy image (it may not be
	// <hub>/proxyv2:<tag>), its defaultConfig.proxyMetadata, and where they came from.
	image         string
	proxyMetadata map[string]string
	meshSource    string
	serving       *mesh.Serving
}

// DefaultConfig returns a fully defaulted, valid configuration.
func DefaultConfig() *Config {
	c := &Config{APIVersion: ConfigAPIVersion, Kind: ConfigKind}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		panic("inject: default config is invalid: " + err.Error())
	}
	return c
}

// ParseConfig decodes a configuration file strictly (unknown and duplicate keys are errors,
// keys are case-sensitive), applies the defaults and validates the result.
func ParseConfig(data []byte) (*Config, error) {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("decoding config: %v", err)
	}
	c := &Config{}
	strict, err := kjson.UnmarshalStrict(j, c, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		if qerr := badQuantity(j); qerr != nil {
			err = qerr
		}
		return nil, fmt.Errorf("decoding config: %v", err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("decoding config: %s", joinSorted(strict, "; "))
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// LoadConfig reads and parses the configuration file at path; "" means DefaultConfig().
func LoadConfig(path string) (*Config, error) {
	if path == "" {
		return DefaultConfig(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err) // the error names the file
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// badQuantity names the key of an unparsable quantity: the decoder's own error does not say
// where it is.
func badQuantity(j []byte) error {
	var raw struct {
		ProxyResources struct{ Requests, Limits map[string]any } `json:"proxyResources"`
	}
	if json.Unmarshal(j, &raw) != nil {
		return nil
	}
	var errs []error
	for key, rl := range map[string]map[string]any{"requests": raw.ProxyResources.Requests, "limits": raw.ProxyResources.Limits} {
		for name, v := range rl {
			if _, err := resource.ParseQuantity(fmt.Sprint(v)); err != nil {
				errs = append(errs, fmt.Errorf("proxyResources.%s.%s: %q is not a quantity like 100m or 128Mi", key, name, fmt.Sprint(v)))
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New(joinSorted(errs, "; "))
}

func (c *Config) applyDefaults() {
	c.explicit = map[string]bool{}
	for key, set := range map[string]bool{
		"hub": c.Hub != "", "istioVersion": c.IstioVersion != "", "discoveryAddress": c.DiscoveryAddress != "",
		"caAddress": c.CAAddress != "", "trustDomain": c.TrustDomain != "", "meshID": c.MeshID != "",
		"clusterID": c.ClusterID != "", "jwtPolicy": c.JWTPolicy != "", "imagePullPolicy": c.ImagePullPolicy != "",
		"proxyResources": len(c.ProxyResources.Requests) > 0 || len(c.ProxyResources.Limits) > 0 || len(c.ProxyResources.Claims) > 0,
	} {
		if set {
			c.explicit[key] = true
		}
	}
	if c.Mode == "" {
		c.Mode = ModeSidecar
	}
	setDefault(&c.Hub, DefaultHub)
	setDefault(&c.IstioVersion, DefaultIstioVersion)
	setDefault(&c.IstioNamespace, mesh.DefaultNamespace)
	istiod := "istiod"
	if c.Revision != "" {
		istiod += "-" + c.Revision
	}
	setDefault(&c.DiscoveryAddress, istiod+"."+c.IstioNamespace+".svc:15012")
	setDefault(&c.CAAddress, c.DiscoveryAddress)
	setDefault(&c.TrustDomain, DefaultTrustDomain)
	setDefault(&c.MeshID, DefaultMeshID)
	setDefault(&c.ClusterID, DefaultClusterID)
	setDefault(&c.JWTPolicy, JWTPolicyThirdParty)
	if c.ProxyRunAsUser == nil {
		root := int64(0) // the seed's value: the proxy writes certificates as root
		c.ProxyRunAsUser = &root
	}
	r := &c.ProxyResources
	if len(r.Requests) == 0 && len(r.Limits) == 0 && len(r.Claims) == 0 {
		// Istio's own sidecar defaults.
		r.Requests = corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("100m"),
			corev1.ResourceMemory: resource.MustParse("128Mi"),
		}
		r.Limits = corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("2000m"),
			corev1.ResourceMemory: resource.MustParse("1Gi"),
		}
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = corev1.PullIfNotPresent
	}
	if c.EmissaryImages == nil {
		c.EmissaryImages = slices.Clone(DefaultEmissaryImages)
	}
	c.Mapping.ApplyDefaults()
}

func setDefault(field *string, value string) {
	if *field == "" {
		*field = value
	}
}

// imageTag is Docker's tag grammar.
var imageTag = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// Validate checks every key and reports all problems at once, each naming its key. It also
// compiles the meshed-namespace selectors of the mapping section.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.APIVersion != ConfigAPIVersion {
		bad("apiVersion", "must be %q, got %q", ConfigAPIVersion, c.APIVersion)
	}
	if c.Kind != ConfigKind {
		bad("kind", "must be %q, got %q", ConfigKind, c.Kind)
	}
	switch {
	case c.Hub == "":
		bad("hub", "must not be empty")
	case strings.ContainsAny(c.Hub, " \t\n@") || strings.HasSuffix(c.Hub, "/"):
		bad("hub", "must be a registry/repository prefix like %q, got %q", DefaultHub, c.Hub)
	}
	if !imageTag.MatchString(c.IstioVersion) {
		bad("istioVersion", "must be an image tag like %q, got %q", DefaultIstioVersion, c.IstioVersion)
	} else if r, err := parseIstioRelease(c.IstioVersion); err != nil {
		bad("istioVersion", "%v", err)
	} else {
		c.release = r
	}
	if _, err := parseMode(string(c.Mode)); err != nil {
		bad("mode", "%v", err)
	} else if c.Mode == ModeIstioInjector && c.release != (istioRelease{}) && !c.release.atLeast(releaseIstioInjector) {
		bad("mode", "%s needs Istio %s or later (istioVersion is %s): use %s", ModeIstioInjector, releaseIstioInjector, c.IstioVersion, ModeSidecar)
	}
	if c.Revision != "" {
		for _, m := range validation.IsDNS1123Label(c.Revision) {
			bad("revision", "%s", m)
		}
	}
	for _, m := range validation.IsDNS1123Label(c.IstioNamespace) {
		bad("istioNamespace", "%s", m)
	}
	for key, addr := range map[string]string{"discoveryAddress": c.DiscoveryAddress, "caAddress": c.CAAddress} {
		if err := checkHostPort(addr); err != nil {
			bad(key, "%v", err)
		}
	}
	for key, v := range map[string]string{"trustDomain": c.TrustDomain, "meshID": c.MeshID, "clusterID": c.ClusterID} {
		if v == "" {
			bad(key, "must not be empty")
		}
	}
	switch {
	case c.JWTPolicy != JWTPolicyThirdParty && c.JWTPolicy != JWTPolicyFirstParty:
		bad("jwtPolicy", "must be one of %s, %s", JWTPolicyThirdParty, JWTPolicyFirstParty)
	case c.JWTPolicy == JWTPolicyFirstParty && c.release.atLeast(releaseNoFirstPartyJWT):
		bad("jwtPolicy", "Istio %s and later treat %s as %s; remove the key or set %s", releaseNoFirstPartyJWT, JWTPolicyFirstParty, JWTPolicyThirdParty, JWTPolicyThirdParty)
	}
	if c.ProxyRunAsUser != nil && *c.ProxyRunAsUser < 0 {
		bad("proxyRunAsUser", "must not be negative")
	}
	errs = append(errs, checkResources(c.ProxyResources)...)
	switch c.ImagePullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		bad("imagePullPolicy", "must be one of Always, IfNotPresent, Never")
	}
	for i, p := range c.EmissaryImages {
		if err := checkImagePattern(p); err != nil {
			bad(fmt.Sprintf("emissaryImages[%d]", i), "%v", err)
		}
	}
	for _, err := range c.Mapping.Validate() {
		errs = append(errs, fmt.Errorf("mapping.%w", err))
	}
	if len(errs) == 0 {
		return nil
	}
	// Sorted: the map iterations above are random and the message must be stable.
	return errors.New("invalid config: " + joinSorted(errs, "; "))
}

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port, got %q", addr)
	}
	if n, err := strconv.Atoi(port); host == "" || err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("must be host:port with a port in 1-65535, got %q", addr)
	}
	return nil
}

func checkResources(r corev1.ResourceRequirements) []error {
	var errs []error
	for _, list := range []struct {
		key string
		rl  corev1.ResourceList
	}{{"requests", r.Requests}, {"limits", r.Limits}} {
		for name, q := range list.rl {
			if q.Sign() < 0 {
				errs = append(errs, fmt.Errorf("proxyResources.%s.%s: must not be negative", list.key, name))
			}
		}
	}
	for name, req := range r.Requests {
		if limit, ok := r.Limits[name]; ok && req.Cmp(limit) > 0 {
			errs = append(errs, fmt.Errorf("proxyResources.requests.%s: must be less than or equal to the limit %s, got %s",
				name, limit.String(), req.String()))
		}
	}
	return errs
}

func joinSorted(errs []error, sep string) string {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	slices.Sort(msgs)
	return strings.Join(msgs, sep)
}

// Image is the istio-proxy image reference: the serving revision's (ForWorkload), else
// <hub>/proxyv2:<istioVersion>.
func (c *Config) Image() string {
	if c.image != "" {
		return c.image
	}
	return c.Hub + "/proxyv2:" + c.IstioVersion
}

// SidecarHash is a short stable hash of exactly the settings that shape the injected
// Deployment (the resolved ones: Revision only matters through the addresses). The Mapping
// section is left out so that changing it does not restart Emissary pods.
func (c *Config) SidecarHash() string {
	b, err := json.Marshal(struct {
		Hub, IstioVersion, DiscoveryAddress, CAAddress string
		TrustDomain, MeshID, ClusterID, JWTPolicy      string
		ProxyRunAsUser                                 *int64
		ProxyResources                                 corev1.ResourceRequirements
		ImagePullPolicy                                corev1.PullPolicy
	}{
		c.Hub, c.IstioVersion, c.DiscoveryAddress, c.CAAddress,
		c.TrustDomain, c.MeshID, c.ClusterID, c.JWTPolicy,
		c.ProxyRunAsUser, c.ProxyResources, c.ImagePullPolicy,
	})
	if err != nil { // cannot happen: plain strings and quantities
		panic(err)
	}
	if c.image != "" || len(c.proxyMetadata) > 0 {
		// What only the mesh sets; a configuration without it keeps the hash it always had,
		// so upgrading the webhook restarts nothing.
		return hashOf(struct {
			Config, Image string
			ProxyMetadata map[string]string
		}{string(b), c.image, c.proxyMetadata})
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}
