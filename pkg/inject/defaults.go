package inject

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// withServerDefaults returns a copy of t with the defaults the API server applies to a pod
// template (k8s.io/kubernetes/pkg/apis/core/v1, defaults.go) filled in, for the fields that
// can occur in what we inject or in what a user writes next to it. Comparing defaulted copies
// makes "injected, stored, read back, injected again" come out unchanged, although the stored
// object has e.g. terminationMessagePath and fieldRef.apiVersion that we never set.
func withServerDefaults(t *corev1.PodTemplateSpec) *corev1.PodTemplateSpec {
	t = t.DeepCopy()
	spec := &t.Spec
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			defaultContainer(&cs[i])
		}
	}
	for i := range spec.Volumes {
		defaultVolume(&spec.Volumes[i].VolumeSource)
	}
	return t
}

func defaultContainer(c *corev1.Container) {
	if c.ImagePullPolicy == "" {
		if defaultsToPullAlways(c.Image) {
			c.ImagePullPolicy = corev1.PullAlways
		} else {
			c.ImagePullPolicy = corev1.PullIfNotPresent
		}
	}
	if c.TerminationMessagePath == "" {
		c.TerminationMessagePath = corev1.TerminationMessagePathDefault
	}
	if c.TerminationMessagePolicy == "" {
		c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	for i := range c.Ports {
		if c.Ports[i].Protocol == "" {
			c.Ports[i].Protocol = corev1.ProtocolTCP
		}
	}
	for i := range c.Env {
		if vf := c.Env[i].ValueFrom; vf != nil && vf.FieldRef != nil && vf.FieldRef.APIVersion == "" {
			vf.FieldRef.APIVersion = "v1"
		}
	}
	for _, rl := range []corev1.ResourceList{c.Resources.Limits, c.Resources.Requests} {
		for name, q := range rl {
			q.RoundUp(-3) // the server rounds up to milli units
			rl[name] = q
		}
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if p == nil {
			continue
		}
		for _, f := range []struct {
			v   *int32
			def int32
		}{{&p.TimeoutSeconds, 1}, {&p.PeriodSeconds, 10}, {&p.SuccessThreshold, 1}, {&p.FailureThreshold, 3}} {
			if *f.v == 0 {
				*f.v = f.def
			}
		}
		if h := p.HTTPGet; h != nil {
			if h.Path == "" {
				h.Path = "/"
			}
			if h.Scheme == "" {
				h.Scheme = corev1.URISchemeHTTP
			}
		}
	}
}

func defaultVolume(v *corev1.VolumeSource) {
	mode := func(m **int32, def int32) {
		if *m == nil {
			*m = ptr.To(def)
		}
	}
	switch {
	case v.ConfigMap != nil:
		mode(&v.ConfigMap.DefaultMode, corev1.ConfigMapVolumeSourceDefaultMode)
	case v.Secret != nil:
		mode(&v.Secret.DefaultMode, corev1.SecretVolumeSourceDefaultMode)
	case v.DownwardAPI != nil:
		mode(&v.DownwardAPI.DefaultMode, corev1.DownwardAPIVolumeSourceDefaultMode)
	case v.Projected != nil:
		mode(&v.Projected.DefaultMode, corev1.ProjectedVolumeSourceDefaultMode)
		for _, s := range v.Projected.Sources {
			if t := s.ServiceAccountToken; t != nil && t.ExpirationSeconds == nil {
				t.ExpirationSeconds = ptr.To[int64](3600)
			}
		}
	}
}

// defaultsToPullAlways mirrors the server: "latest", or no tag and no digest, pulls always.
func defaultsToPullAlways(ref string) bool {
	rest := ref[len(ImageRepository(ref)):]
	return rest == "" || rest == ":latest" || strings.HasPrefix(rest, ":latest@")
}
