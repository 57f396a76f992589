package kubelet

import (
	"context"
	"fmt"
	"math"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// nodeAllocatable stands in for the node's capacity in resourceFieldRefs of a container
// without a limit (the kubelet uses the node's allocatable resources there).
var nodeAllocatable = corev1.ResourceList{
	corev1.ResourceCPU:    resource.MustParse("2"),
	corev1.ResourceMemory: resource.MustParse("8Gi"),
}

// containerEnv is the container's environment in the kubelet's order: the image's, the
// kubernetes Service's variables (always set: Istio's agent checks KUBERNETES_SERVICE_HOST to
// know it runs in a pod), HOSTNAME, then the container's env with valueFrom resolved and
// $(VAR) references expanded, then opts.ExtraEnv.
func containerEnv(ctx context.Context, api kubernetes.Interface, pod *corev1.Pod, c *corev1.Container, img Image, opts Options) ([]string, error) {
	env := append([]string{}, img.Env...)
	env = append(env,
		"HOSTNAME="+pod.Name,
		"KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443", "KUBERNETES_SERVICE_PORT_HTTPS=443",
		"KUBERNETES_PORT=tcp://10.96.0.1:443", "KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP_PROTO=tcp", "KUBERNETES_PORT_443_TCP_PORT=443", "KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1",
	)
	if len(c.EnvFrom) > 0 {
		return nil, fmt.Errorf("kubelet: container %s: envFrom is not supported here", c.Name)
	}
	for _, e := range c.Env {
		v := e.Value
		var err error
		switch vf := e.ValueFrom; {
		case vf == nil:
			v = expand(v, envMap(env))
		case vf.FieldRef != nil:
			v, err = fieldValue(pod, vf.FieldRef.FieldPath, opts)
		case vf.ResourceFieldRef != nil:
			ref := *vf.ResourceFieldRef
			if ref.ContainerName == "" {
				ref.ContainerName = c.Name
			}
			v, err = resourceValue(pod, &ref)
		case vf.ConfigMapKeyRef != nil:
			var cm *corev1.ConfigMap
			cm, err = api.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, vf.ConfigMapKeyRef.Name, metav1.GetOptions{})
			if err == nil {
				v = cm.Data[vf.ConfigMapKeyRef.Key]
			}
		case vf.SecretKeyRef != nil:
			var s *corev1.Secret
			s, err = api.CoreV1().Secrets(pod.Namespace).Get(ctx, vf.SecretKeyRef.Name, metav1.GetOptions{})
			if err == nil {
				v = string(s.Data[vf.SecretKeyRef.Key])
			}
		default:
			err = fmt.Errorf("unsupported valueFrom")
		}
		if err != nil {
			return nil, fmt.Errorf("kubelet: container %s env %s: %w", c.Name, e.Name, err)
		}
		env = append(env, e.Name+"="+v)
	}
	return append(env, opts.ExtraEnv...), nil
}

// envMap is env as a lookup; a later entry wins, as in the process's environment.
func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// fieldValue resolves a downward API field path as the kubelet does.
func fieldValue(pod *corev1.Pod, fieldPath string, opts Options) (string, error) {
	switch fieldPath {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return opts.PodIP, nil
	case "status.hostIP", "status.hostIPs":
		return opts.HostIP, nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		if key, ok := strings.CutPrefix(fieldPath, prefix+"['"); ok && strings.HasSuffix(key, "']") {
			return m[strings.TrimSuffix(key, "']")], nil
		}
	}
	return "", fmt.Errorf("field path %q is not supported", fieldPath)
}

// resourceValue resolves a resourceFieldRef: the container's limit (or the node's allocatable
// when it has none) or request, divided by the divisor and rounded up, as the kubelet does.
func resourceValue(pod *corev1.Pod, ref *corev1.ResourceFieldSelector) (string, error) {
	c, err := findContainer(pod, ref.ContainerName)
	if err != nil {
		return "", err
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", fmt.Errorf("resource %q is not supported", ref.Resource)
	}
	var q resource.Quantity
	var found bool
	switch kind {
	case "limits":
		q, found = c.Resources.Limits[corev1.ResourceName(name)]
		if !found {
			q, found = nodeAllocatable[corev1.ResourceName(name)]
		}
	case "requests":
		q, found = c.Resources.Requests[corev1.ResourceName(name)]
	}
	if !found && kind != "requests" {
		return "", fmt.Errorf("resource %q is not supported", ref.Resource)
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	return fmt.Sprint(int64(math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue())))), nil
}

// expand replaces $(VAR) with VAR's value when it is defined and $$ with $, as the kubelet
// expands env values, command and args; an undefined reference stays as written.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch next := s[i+1]; {
		case next == '$':
			b.WriteByte('$')
			i++
		case next == '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
