package mesh

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Values are the parts of a revision's injector values (ConfigMap
// istio-sidecar-injector[-<rev>], key "values", the istiod chart's values as JSON) that the
// sidecar's rendering reads. "" means unset: the injection template's default applies.
type Values struct {
	Revision        string // "revision": "" for the default revision
	Hub             string // global.hub
	Tag             string // global.tag (a number in YAML is kept as written)
	Variant         string // global.variant
	ProxyImage      string // global.proxy.image: a name ("proxyv2") or a full reference
	ImagePullPolicy string // global.imagePullPolicy
	CAAddress       string // global.caAddress
	IstioNamespace  string // global.istioNamespace
	MeshID          string // global.meshID
	TrustDomain     string // global.trustDomain (the mesh config's wins)
	ClusterName     string // global.multiCluster.clusterName
	JWTPolicy       string // global.jwtPolicy
	// Resources is global.proxy.resources; nil when unset.
	Resources *corev1.ResourceRequirements
}

// rawValues mirrors the chart's value names.
type rawValues struct {
	Revision string `json:"revision"`
	Global   struct {
		Hub             string          `json:"hub"`
		Tag             json.RawMessage `json:"tag"`
		Variant         string          `json:"variant"`
		ImagePullPolicy string          `json:"imagePullPolicy"`
		CAAddress       string          `json:"caAddress"`
		IstioNamespace  string          `json:"istioNamespace"`
		MeshID          string          `json:"meshID"`
		TrustDomain     string          `json:"trustDomain"`
		JWTPolicy       string          `json:"jwtPolicy"`
		MultiCluster    struct {
			ClusterName string `json:"clusterName"`
		} `json:"multiCluster"`
		Proxy struct {
			Image     string          `json:"image"`
			Resources json.RawMessage `json:"resources"`
		} `json:"proxy"`
	} `json:"global"`
}

// ParseValues reads the "values" key of an injector ConfigMap.
func ParseValues(data string) (Values, error) {
	if strings.TrimSpace(data) == "" {
		return Values{}, fmt.Errorf(`key "values" is empty`)
	}
	var raw rawValues
	if err := json.Unmarshal([]byte(data), &raw); err != nil {
		return Values{}, fmt.Errorf(`key "values" is not the istiod chart's values as JSON: %v`, err)
	}
	g := raw.Global
	v := Values{
		Revision: raw.Revision, Hub: g.Hub, Variant: g.Variant, ProxyImage: g.Proxy.Image,
		ImagePullPolicy: g.ImagePullPolicy, CAAddress: g.CAAddress, IstioNamespace: g.IstioNamespace,
		MeshID: g.MeshID, TrustDomain: g.TrustDomain, ClusterName: g.MultiCluster.ClusterName, JWTPolicy: g.JWTPolicy,
	}
	tag, err := scalar(g.Tag)
	if err != nil {
		return Values{}, fmt.Errorf("global.tag: %v", err)
	}
	v.Tag = tag
	if r := bytes.TrimSpace(g.Proxy.Resources); len(r) > 0 && !bytes.Equal(r, []byte("null")) {
		var res corev1.ResourceRequirements
		if err := json.Unmarshal(r, &res); err != nil {
			return Values{}, fmt.Errorf("global.proxy.resources: %v", err)
		}
		if len(res.Requests) > 0 || len(res.Limits) > 0 {
			v.Resources = &res
		}
	}
	return v, nil
}

// scalar is a JSON string or number as text, as Istio's injector prints the tag (fmt "%v"
// of the value); numbers keep their literal, so 1.30 stays "1.30".
func scalar(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&n); err != nil {
		return "", fmt.Errorf("must be a string or a number, got %s", raw)
	}
	return n.String(), nil
}

// MeshConfig is what the rendering reads of a revision's mesh config (ConfigMap
// istio[-<rev>], key "mesh", YAML).
type MeshConfig struct {
	TrustDomain      string
	DiscoveryAddress string            // defaultConfig.discoveryAddress
	ProxyMetadata    map[string]string // defaultConfig.proxyMetadata
	// ImageType is defaultConfig.image.imageType; HasImage says whether defaultConfig.image
	// was set at all (Istio's ProxyImage then takes its imageType, even an empty one).
	ImageType string
	HasImage  bool
	MeshID    string // defaultConfig.meshId
}

type rawMesh struct {
	TrustDomain   string `json:"trustDomain"`
	DefaultConfig struct {
		DiscoveryAddress string            `json:"discoveryAddress"`
		ProxyMetadata    map[string]string `json:"proxyMetadata"`
		MeshID           string            `json:"meshId"`
		Image            *struct {
			ImageType string `json:"imageType"`
		} `json:"image"`
	} `json:"defaultConfig"`
}

// ParseMeshConfig reads the "mesh" key of a mesh config ConfigMap.
func ParseMeshConfig(data string) (MeshConfig, error) {
	var raw rawMesh
	if err := yaml.Unmarshal([]byte(data), &raw); err != nil {
		return MeshConfig{}, fmt.Errorf(`key "mesh" is not a mesh config: %v`, err)
	}
	d := raw.DefaultConfig
	mc := MeshConfig{TrustDomain: raw.TrustDomain, DiscoveryAddress: d.DiscoveryAddress, ProxyMetadata: d.ProxyMetadata, MeshID: d.MeshID}
	if d.Image != nil {
		mc.HasImage, mc.ImageType = true, d.Image.ImageType
	}
	return mc, nil
}
