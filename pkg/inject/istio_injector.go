package inject

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The istio-injector mode: what Emissary's 2.x/3.x guide asks of a user, written by the
// webhook. Istio's own injector adds istio-proxy (and istio-init) when the Pod is created;
// the pod template gets
//
//   - the label sidecar.istio.io/inject: "true" (Istio's webhooks select pods by label), and
//     istio.io/rev: <revision> with a revision;
//   - traffic.sidecar.istio.io/includeInboundPorts: "" and includeOutboundIPRanges: "": Istio
//     intercepts none of the edge's traffic (Emissary originates Istio mTLS itself);
//   - proxy.istio.io/config with proxyMetadata.OUTPUT_CERTS: the proxy writes its certificates;
//   - sidecar.istio.io/userVolumeMount: Istio mounts istio-certs into its proxy, there;
//
// and Emissary's container the istio-certs volume, its mount and AMBASSADOR_ISTIO_SECRET_DIR.
// AMBASSADOR_ENVOY_BASE_ID is not needed: Istio's Envoy runs without hot restart since 1.10.
//
// What the user already has wins, as in sidecar mode: it is not duplicated nor recorded (so
// strip never removes it), and a warning says so when it differs. The exceptions, recorded in
// Status.Replaced (or ReplacedLabels) so that strip gives the user's value back, are a label
// that would keep Istio from injecting (sidecar.istio.io/inject "false") and Istio's two JSON
// and YAML annotations, into which the missing entry is merged.

// istioInjectorVolumes, ...Env and ...Mounts are Emissary's side of the sharing. The mount is
// read-only, as in Emissary's guide: only Istio's proxy writes there.
func istioInjectorVolumes() []corev1.Volume {
	return slices.DeleteFunc(ProxyVolumes(), func(v corev1.Volume) bool { return v.Name != volCerts })
}

func istioInjectorEnv() []corev1.EnvVar {
	return []corev1.EnvVar{{Name: "AMBASSADOR_ISTIO_SECRET_DIR", Value: certsDir}}
}

func istioInjectorMounts() []corev1.VolumeMount {
	return []corev1.VolumeMount{{MountPath: certsMount, Name: volCerts, ReadOnly: true}}
}

// proxyCertsMount is the userVolumeMount entry of the proxy: istio-certs at OUTPUT_CERTS.
type proxyCertsMount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
}

// injectIstioInjector prepares t, which must not carry an earlier injection, for Istio's own
// injector; container is the Emissary container. It returns the status it recorded on t and
// warnings about what of the user's it kept or replaced.
func injectIstioInjector(t *corev1.PodTemplateSpec, container string, cfg *Config) (*Status, []string, error) {
	ci := ContainerIndex(t.Spec.Containers, container)
	if ci < 0 {
		return nil, nil, fmt.Errorf("container %q does not exist", container)
	}
	st := &Status{Version: Version, ConfigHash: cfg.modeHash(ModeIstioInjector), Mode: ModeIstioInjector, EmissaryContainer: container}
	warnings := addEmissarySide(&t.Spec, ci, st, istioInjectorVolumes(), istioInjectorEnv(), istioInjectorMounts())

	m := metadataWriter{t: t, st: st}
	// Select Istio's injector. Its webhooks select pods by this label, and Istio reads only
	// "true" as yes: a user's other value is replaced (it would leave Emissary without
	// certificates). An annotation that says no is kept, with a notice: Istio's injector (and
	// its CNI plugin) read the label first, so it changes nothing, and rewriting a value from
	// the user's manifest would have a GitOps engine that compares with the manifest (Argo CD's
	// default diff) report the Deployment out of sync for ever (docs/gitops.md).
	m.label(LabelIstioInject, "true", true)
	if v, ok := t.Annotations[AnnotationIstioInject]; ok && !istioWouldInject(v) {
		m.warnings = append(m.warnings, fmt.Sprintf("pod template annotation %s=%q kept: Istio reads the label %s=\"true\" first", AnnotationIstioInject, v, LabelIstioInject))
	}
	if cfg.Revision != "" {
		m.label(LabelIstioRev, cfg.Revision, false)
	}
	m.annotation(AnnotationIncludeInboundPorts, "", "Istio's proxy intercepts Emissary's inbound traffic on those ports")
	m.annotation(AnnotationIncludeOutboundIPRange, "", "Istio's proxy intercepts Emissary's outbound traffic to those ranges, which Emissary already sends with Istio mTLS")
	m.proxyConfig()
	m.userVolumeMount()
	if t.Annotations == nil {
		t.Annotations = map[string]string{}
	}
	t.Annotations[AnnotationStatus] = st.String()
	return st, append(warnings, m.warnings...), nil
}

// metadataWriter adds pod template labels and annotations, recording them in st.
type metadataWriter struct {
	t        *corev1.PodTemplateSpec
	st       *Status
	warnings []string
}

// label sets key to value unless the user has it. A different value of the user's is
// replaced with replace (strip gives it back), else kept with a warning.
func (m *metadataWriter) label(key, value string, replace bool) {
	t := m.t
	v, ok := t.Labels[key]
	switch {
	case ok && v == value:
		return
	case ok && !replace:
		m.warnings = append(m.warnings, fmt.Sprintf("pod template label %s=%q kept (the injector would set %q)", key, v, value))
		return
	case ok:
		m.warnings = append(m.warnings, fmt.Sprintf("pod template label %s=%q replaced by %q: Istio's injector must render %s", key, v, value, ProxyContainerName))
		if m.st.ReplacedLabels == nil {
			m.st.ReplacedLabels = map[string]string{}
		}
		m.st.ReplacedLabels[key] = v
	}
	if t.Labels == nil {
		t.Labels = map[string]string{}
	}
	t.Labels[key] = value
	m.st.Labels = append(m.st.Labels, key)
}

// annotation sets key to value unless the user has it; a different value of the user's is
// kept, with a warning that says what it does.
func (m *metadataWriter) annotation(key, value, ifDifferent string) {
	if v, ok := m.t.Annotations[key]; ok {
		if v != value {
			m.warnings = append(m.warnings, fmt.Sprintf("pod template annotation %s=%q kept (the injector would set %q): %s", key, v, value, ifDifferent))
		}
		return
	}
	m.set(key, value)
}

// replaceAnnotation overwrites the user's value old of key, which strip puts back, saying why.
func (m *metadataWriter) replaceAnnotation(key, value, old, why string) {
	m.warnings = append(m.warnings, fmt.Sprintf("pod template annotation %s=%q replaced by %q: %s", key, old, value, why))
	if m.st.Replaced == nil {
		m.st.Replaced = map[string]string{}
	}
	m.st.Replaced[key] = old
	m.set(key, value)
}

func (m *metadataWriter) set(key, value string) {
	if m.t.Annotations == nil {
		m.t.Annotations = map[string]string{}
	}
	m.t.Annotations[key] = value
	m.st.Annotations = append(m.st.Annotations, key)
}

// proxyConfig makes proxy.istio.io/config carry proxyMetadata.OUTPUT_CERTS, merged into the
// user's ProxyConfig when there is one.
func (m *metadataWriter) proxyConfig() {
	key := AnnotationProxyConfig
	old, ok := m.t.Annotations[key]
	if !ok {
		m.set(key, "proxyMetadata:\n  OUTPUT_CERTS: "+certsDir+"\n")
		return
	}
	pc, err := parseProxyConfig(old)
	if err != nil {
		m.warnings = append(m.warnings, fmt.Sprintf("pod template annotation %s kept, but Istio cannot read it either (%v): add proxyMetadata.OUTPUT_CERTS: %s, or Istio's proxy writes no certificates", key, err, certsDir))
		return
	}
	md := proxyMetadata(pc)
	if v, ok := md["OUTPUT_CERTS"]; ok {
		if s, _ := v.(string); path.Clean(s) != certsDir {
			m.warnings = append(m.warnings, fmt.Sprintf("pod template annotation %s sets proxyMetadata.OUTPUT_CERTS to %v; kept (the injector would set %s, where Emissary reads)", key, v, certsDir))
		}
		return
	}
	if md == nil {
		md = map[string]any{}
		pc["proxyMetadata"] = md
	}
	md["OUTPUT_CERTS"] = certsDir
	merged, err := yaml.Marshal(pc)
	if err != nil { // cannot happen: it was just read from YAML
		return
	}
	m.replaceMerged(key, string(merged), old, "proxyMetadata.OUTPUT_CERTS")
}

// userVolumeMount makes sidecar.istio.io/userVolumeMount mount istio-certs at OUTPUT_CERTS in
// Istio's proxy, merged into the user's list (or map, the other form Istio reads).
func (m *metadataWriter) userVolumeMount() {
	key := AnnotationUserVolumeMount
	want := proxyCertsMount{Name: volCerts, MountPath: certsDir}
	old, ok := m.t.Annotations[key]
	if !ok {
		b, _ := json.Marshal([]proxyCertsMount{want})
		m.set(key, string(b))
		return
	}
	var list []map[string]any
	var byName map[string]map[string]any
	var merged []byte
	switch {
	case json.Unmarshal([]byte(old), &list) == nil:
		for _, e := range list {
			if e["name"] == volCerts {
				return // the user's
			}
		}
		merged, _ = json.Marshal(append(list, map[string]any{"name": want.Name, "mountPath": want.MountPath}))
	case json.Unmarshal([]byte(old), &byName) == nil:
		if _, ok := byName[volCerts]; ok {
			return
		}
		byName[volCerts] = map[string]any{"mountPath": want.MountPath}
		merged, _ = json.Marshal(byName)
	default:
		m.warnings = append(m.warnings, fmt.Sprintf("pod template annotation %s kept, but it is not the JSON list Istio reads: mount %q at %s in it, or Istio's proxy cannot write the certificates where Emissary reads them", key, volCerts, certsDir))
		return
	}
	m.replaceMerged(key, string(merged), old, volCerts)
}

// replaceMerged stores the user's annotation old with what the injector merged into it.
func (m *metadataWriter) replaceMerged(key, merged, old, what string) {
	m.warnings = append(m.warnings, fmt.Sprintf("pod template annotation %s: added %s to yours", key, what))
	if m.st.Replaced == nil {
		m.st.Replaced = map[string]string{}
	}
	m.st.Replaced[key] = old
	m.t.Annotations[key] = merged
	m.st.Annotations = append(m.st.Annotations, key)
}

// parseProxyConfig reads proxy.istio.io/config as Istio does: a ProxyConfig in YAML (or JSON).
func parseProxyConfig(v string) (map[string]any, error) {
	pc := map[string]any{}
	if err := yaml.Unmarshal([]byte(v), &pc); err != nil {
		return nil, err
	}
	return pc, nil
}

func proxyMetadata(pc map[string]any) map[string]any {
	md, _ := pc["proxyMetadata"].(map[string]any)
	return md
}

// addEmissarySide adds volumes to spec and env and mounts to its container ci, recording
// what it added in st; what the user already has wins (see Inject), with a warning when it
// differs.
func addEmissarySide(spec *corev1.PodSpec, ci int, st *Status, volumes []corev1.Volume, env []corev1.EnvVar, mounts []corev1.VolumeMount) []string {
	var warnings []string
	for _, v := range volumes {
		if i := indexVolume(spec.Volumes, v.Name); i >= 0 {
			if !sameVolumeSource(spec.Volumes[i], v) {
				warnings = append(warnings, fmt.Sprintf("volume %q already exists and differs from the one the sidecar expects; keeping yours", v.Name))
			}
			continue
		}
		spec.Volumes = append(spec.Volumes, v)
		st.Volumes = append(st.Volumes, v.Name)
	}
	c := &spec.Containers[ci]
	for _, e := range env {
		if i := indexEnv(c.Env, e.Name); i >= 0 {
			if u := c.Env[i]; u.ValueFrom != nil || u.Value != e.Value {
				warnings = append(warnings, fmt.Sprintf("container %q sets %s to %s; keeping it (the injector would set %q)", c.Name, e.Name, envValue(u), e.Value))
			}
			continue
		}
		c.Env = append(c.Env, e)
		st.Env = append(st.Env, e.Name)
	}
	for _, m := range mounts {
		if i := indexMount(c.VolumeMounts, m.MountPath); i >= 0 {
			if u := c.VolumeMounts[i]; u.Name != m.Name || u.SubPath != "" || u.SubPathExpr != "" {
				warnings = append(warnings, fmt.Sprintf("container %q mounts volume %q at %s; keeping it (the injector would mount %q)", c.Name, u.Name, u.MountPath, m.Name))
			}
			continue
		}
		c.VolumeMounts = append(c.VolumeMounts, m)
		st.Mounts = append(st.Mounts, m.MountPath)
	}
	return warnings
}

// addedSummary lists what st records as added, for a message: "label sidecar.istio.io/inject,
// volume istio-certs, ...".
func (s *Status) addedSummary() string {
	var parts []string
	add := func(what string, items []string) {
		for _, i := range items {
			parts = append(parts, what+" "+i)
		}
	}
	add("label", s.Labels)
	add("annotation", s.Annotations)
	add("volume", s.Volumes)
	add("env", s.Env)
	add("mount", s.Mounts)
	add("container", s.Containers)
	add("init container", s.InitContainers)
	if len(parts) == 0 {
		return "nothing (it was complete)"
	}
	return strings.Join(parts, ", ")
}
