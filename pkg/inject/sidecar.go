package inject

import (
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// The pieces below are the seed's "Istio 1.5 and above" Deployment, field for field, with the
// values that depend on the mesh taken from Config, and the proxy's command line and env as the
// configured Istio release reads them (agent.go). Fields the seed leaves out (e.g.
// terminationMessagePath) are left to the API server's defaulting; the comparison in
// Deployment treats defaulted and unset values as equal.

const (
	volCerts   = "istio-certs"
	volCA      = "istiod-ca-cert"
	volEnvoy   = "istio-envoy"
	volToken   = "istio-token"
	certsDir   = "/etc/istio-certs"
	certsMount = "/etc/istio-certs/" // the seed's spelling, trailing slash included
)

// ProxyContainer is the istio-proxy sidecar for the Deployment named deployment.
func ProxyContainer(cfg *Config, deployment string) corev1.Container {
	var runAsUser *int64
	if cfg.ProxyRunAsUser != nil {
		runAsUser = ptr.To(*cfg.ProxyRunAsUser)
	}
	env := append([]corev1.EnvVar{
		{Name: "OUTPUT_CERTS", Value: certsDir},
		{Name: "JWT_POLICY", Value: cfg.JWTPolicy},
		{Name: "PILOT_CERT_PROVIDER", Value: "istiod"},
		{Name: "CA_ADDR", Value: cfg.CAAddress},
		{Name: "ISTIO_META_MESH_ID", Value: cfg.MeshID},
		fieldEnv("POD_NAME", "", "metadata.name"),
		fieldEnv("POD_NAMESPACE", "", "metadata.namespace"),
		fieldEnv("INSTANCE_IP", "", "status.podIP"),
		fieldEnv("SERVICE_ACCOUNT", "", "spec.serviceAccountName"),
		fieldEnv("HOST_IP", "", "status.hostIP"),
		fieldEnv("ISTIO_META_POD_NAME", "v1", "metadata.name"),
		fieldEnv("ISTIO_META_CONFIG_NAMESPACE", "v1", "metadata.namespace"),
		{Name: "ISTIO_META_CLUSTER_ID", Value: cfg.ClusterID},
	}, agentEnv(cfg)...)
	env = appendProxyMetadata(env, cfg.proxyMetadata)
	return corev1.Container{
		Name:            ProxyContainerName,
		Image:           cfg.Image(),
		Args:            agentArgs(cfg, deployment),
		Env:             env,
		ImagePullPolicy: cfg.ImagePullPolicy,
		ReadinessProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path:   "/healthz/ready",
				Port:   intstr.FromInt32(15020),
				Scheme: corev1.URISchemeHTTP,
			}},
			FailureThreshold:    30,
			InitialDelaySeconds: 1,
			PeriodSeconds:       2,
			SuccessThreshold:    1,
			TimeoutSeconds:      1,
		},
		VolumeMounts: []corev1.VolumeMount{
			{MountPath: "/var/run/secrets/istio", Name: volCA},
			{MountPath: "/etc/istio/proxy", Name: volEnvoy},
			{MountPath: certsMount, Name: volCerts},
			{MountPath: "/var/run/secrets/tokens", Name: volToken},
		},
		SecurityContext: &corev1.SecurityContext{RunAsUser: runAsUser},
		Resources:       *cfg.ProxyResources.DeepCopy(),
	}
}

// appendProxyMetadata adds the serving revision's defaultConfig.proxyMetadata as env vars,
// as Istio's injection template does, in key order; a name the sidecar sets already keeps
// the webhook's value (the certificate sharing depends on them).
func appendProxyMetadata(env []corev1.EnvVar, md map[string]string) []corev1.EnvVar {
	for _, k := range slices.Sorted(maps.Keys(md)) {
		if indexEnv(env, k) < 0 {
			env = append(env, corev1.EnvVar{Name: k, Value: md[k]})
		}
	}
	return env
}

func fieldEnv(name, apiVersion, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: apiVersion, FieldPath: path},
	}}
}

// ProxyVolumes are the pod volumes the sidecar and Emissary share, in the seed's order.
func ProxyVolumes() []corev1.Volume {
	memory := func(name string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory},
		}}
	}
	return []corev1.Volume{
		memory(volCerts),
		{Name: volCA, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "istio-ca-root-cert"},
			DefaultMode:          ptr.To[int32](420),
		}}},
		memory(volEnvoy),
		{Name: volToken, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr.To[int32](420),
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience:          "istio-ca",
				ExpirationSeconds: ptr.To[int64](43200),
				Path:              "istio-token",
			}}},
		}}},
	}
}

// EmissaryEnv tells Emissary where the certificates are and moves its Envoy off base ID 0,
// which the sidecar's Envoy uses.
func EmissaryEnv() []corev1.EnvVar {
	return []corev1.EnvVar{
		{Name: "AMBASSADOR_ISTIO_SECRET_DIR", Value: certsDir},
		{Name: "AMBASSADOR_ENVOY_BASE_ID", Value: "1"},
	}
}

// EmissaryMounts are the mounts added to the Emissary container.
func EmissaryMounts() []corev1.VolumeMount {
	return []corev1.VolumeMount{{MountPath: certsMount, Name: volCerts}}
}
