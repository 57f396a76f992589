package inject

import (
	"encoding/json"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// Status is the value of the pod template annotation emissary-istio.io/status: exactly what
// the injector added, so that it can be removed again before every re-render. Items the user
// already had (a volume, env var or mount of the same name or path) are never listed, so
// stripping never removes user data.
type Status struct {
	Version    string `json:"version"`    // injector version (Version)
	ConfigHash string `json:"configHash"` // Config.modeHash(Mode)
	// Mode is what the injection was made for: "" (sidecar, as before modes existed) or
	// istio-injector. Strip removes everything of either; the next render is for the
	// workload's current mode.
	Mode              Mode     `json:"mode,omitempty"`
	EmissaryContainer string   `json:"emissaryContainer"` // the container Env and Mounts were added to
	Containers        []string `json:"containers"`        // added containers, by name
	Volumes           []string `json:"volumes"`           // added volumes, by name
	Env               []string `json:"env"`               // added env vars of EmissaryContainer, by name
	Mounts            []string `json:"mounts"`            // added mounts of EmissaryContainer, by mountPath
	Annotations       []string `json:"annotations"`       // added pod template annotations, by key
	// Replaced holds the user's values of annotations in Annotations that the injector had to
	// overwrite (sidecar.istio.io/inject: "true"); Strip puts them back.
	Replaced map[string]string `json:"replaced,omitempty"`
	// InitContainers are added init containers (istio-proxy as a native sidecar), by name.
	InitContainers []string `json:"initContainers,omitempty"`
	// Labels are added pod template labels, by key; ReplacedLabels the user's values of those
	// the injector overwrote (istio-injector mode's sidecar.istio.io/inject).
	Labels         []string          `json:"labels,omitempty"`
	ReplacedLabels map[string]string `json:"replacedLabels,omitempty"`
}

// String is the compact JSON stored in the annotation. Lists are never null so the shape
// is fixed; field order is the struct's, so the output is stable.
func (s *Status) String() string {
	c := *s
	for _, l := range []*[]string{&c.Containers, &c.Volumes, &c.Env, &c.Mounts, &c.Annotations} {
		if *l == nil {
			*l = []string{}
		}
	}
	b, err := json.Marshal(c)
	if err != nil { // cannot happen: strings only
		panic(err)
	}
	return string(b)
}

// ParseStatus reads the status annotation of t: nil, nil when there is none.
func ParseStatus(t *corev1.PodTemplateSpec) (*Status, error) {
	v, ok := t.Annotations[AnnotationStatus]
	if !ok {
		return nil, nil
	}
	var s Status
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return nil, fmt.Errorf("annotation %s is not valid: %v", AnnotationStatus, err)
	}
	return &s, nil
}

// Strip removes from t exactly what its status annotation names, and the annotation itself.
// Annotations the injector overwrote get the user's value back (Status.Replaced).
// It returns the status it removed (nil when there was none). An unreadable status is an
// error and t is left unchanged: removing things we cannot identify could delete user data.
// Items the user removed in the meantime are simply not found, so a stale status is harmless.
func Strip(t *corev1.PodTemplateSpec) (*Status, error) {
	st, err := ParseStatus(t)
	if st == nil || err != nil {
		return nil, err
	}
	strip(t, st, false)
	return st, nil
}

// strip removes what st names. With keepMounted, volumes that a remaining container still
// mounts are kept (used when removing the injection for good, so that a mount the user wrote
// does not end up pointing at a missing volume).
func strip(t *corev1.PodTemplateSpec, st *Status, keepMounted bool) (kept []string) {
	spec := &t.Spec
	// Whatever the name Inject added to, even "" (admission runs before validation, so a
	// nameless container gets here): strip must undo exactly what Inject did, or the next
	// admission re-renders what it just rendered.
	if i := ContainerIndex(spec.Containers, st.EmissaryContainer); i >= 0 {
		c := &spec.Containers[i]
		c.Env = deleteWhere(c.Env, func(e corev1.EnvVar) bool { return slices.Contains(st.Env, e.Name) })
		c.VolumeMounts = deleteWhere(c.VolumeMounts, func(m corev1.VolumeMount) bool { return slices.Contains(st.Mounts, m.MountPath) })
	}
	spec.Containers = deleteWhere(spec.Containers, func(c corev1.Container) bool { return slices.Contains(st.Containers, c.Name) })
	spec.InitContainers = deleteWhere(spec.InitContainers, func(c corev1.Container) bool { return slices.Contains(st.InitContainers, c.Name) })
	spec.Volumes = deleteWhere(spec.Volumes, func(v corev1.Volume) bool {
		if !slices.Contains(st.Volumes, v.Name) {
			return false
		}
		if keepMounted && mounted(spec, v.Name) {
			kept = append(kept, v.Name)
			return false
		}
		return true
	})
	for _, k := range st.Annotations {
		if v, ok := st.Replaced[k]; ok {
			t.Annotations[k] = v
		} else {
			delete(t.Annotations, k)
		}
	}
	delete(t.Annotations, AnnotationStatus)
	if len(t.Annotations) == 0 {
		t.Annotations = nil
	}
	if len(st.Labels) > 0 {
		for _, k := range st.Labels {
			if v, ok := st.ReplacedLabels[k]; ok {
				t.Labels[k] = v
			} else {
				delete(t.Labels, k)
			}
		}
		if len(t.Labels) == 0 {
			t.Labels = nil
		}
	}
	return kept
}

func mounted(spec *corev1.PodSpec, volume string) bool {
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			for _, m := range c.VolumeMounts {
				if m.Name == volume {
					return true
				}
			}
		}
	}
	return false
}

// deleteWhere is slices.DeleteFunc that returns nil instead of an empty slice, so that a
// stripped template serializes like one that never had the items.
func deleteWhere[T any](s []T, del func(T) bool) []T {
	s = slices.DeleteFunc(s, del)
	if len(s) == 0 {
		return nil
	}
	return s
}

// Same reports whether s and o record the same injection, whatever the injector version:
// what a new webhook version renders from the same configuration is the same sidecar.
func (s *Status) Same(o *Status) bool {
	if s == nil || o == nil {
		return s == o
	}
	a, b := *s, *o
	a.Version, b.Version = "", ""
	return a.String() == b.String()
}
