package inject

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// nativeSidecar (config nativeSidecar: true, sidecar mode) makes istio-proxy a Kubernetes
// native sidecar (Kubernetes 1.29 and later): an init container with restartPolicy: Always.
// The kubelet starts it before Emissary's containers and, because it has a startup probe,
// starts them only once the probe passes; it keeps running beside them and stops after them.
// The probe is the agent's readiness (/healthz/ready on 15020), which passes only once the
// agent has fetched its certificate from istiod (it connects to istiod with it) and so
// written OUTPUT_CERTS: Emissary starts with its certificates there.
//
// It is appended after the user's init containers: they do not need the proxy, and a first
// injection then only appends (WorkloadPatch relies on it).

// addProxy puts the sidecar into spec as cfg says and records it in st.
func addProxy(spec *corev1.PodSpec, st *Status, proxy corev1.Container, cfg *Config) {
	if !cfg.NativeSidecar {
		// After the user's containers: the seed puts istio-proxy second, after aes.
		spec.Containers = append(spec.Containers, proxy)
		st.Containers = []string{ProxyContainerName}
		return
	}
	proxy.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
	proxy.StartupProbe = &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path:   "/healthz/ready",
			Port:   intstr.FromInt32(15020),
			Scheme: corev1.URISchemeHTTP,
		}},
		// Istio's own native sidecar's: every second, for up to 10 minutes.
		PeriodSeconds:    1,
		TimeoutSeconds:   3,
		FailureThreshold: 600,
		SuccessThreshold: 1,
	}
	spec.InitContainers = append(spec.InitContainers, proxy)
	st.InitContainers = []string{ProxyContainerName}
}

// hasProxy reports whether spec has an istio-proxy container or init container.
func hasProxy(spec *corev1.PodSpec) bool {
	return hasContainer(spec.Containers, ProxyContainerName) || hasContainer(spec.InitContainers, ProxyContainerName)
}

// userNativeProxy reports whether t has an istio-proxy init container that the injector did
// not add (a hand-written native sidecar, or Istio's in a template copied from a Pod).
func userNativeProxy(t *corev1.PodTemplateSpec) bool {
	var ours []string
	if st, err := ParseStatus(t); err == nil && st != nil {
		ours = st.InitContainers
	}
	for _, c := range t.Spec.InitContainers {
		if c.Name == ProxyContainerName && !slices.Contains(ours, c.Name) {
			return true
		}
	}
	return false
}
