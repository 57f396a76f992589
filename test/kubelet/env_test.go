package kubelet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The kubelet's $(VAR) expansion (k8s.io/kubernetes third_party/forked/golang/expansion).
func TestExpand(t *testing.T) {
	vars := map[string]string{"POD_NAMESPACE": "ambassador", "EMPTY": ""}
	for in, want := range map[string]string{
		"$(POD_NAMESPACE).svc.cluster.local": "ambassador.svc.cluster.local",
		"$(UNDEFINED)-x":                     "$(UNDEFINED)-x",
		"$$(POD_NAMESPACE)":                  "$(POD_NAMESPACE)",
		"a$(EMPTY)b":                         "ab",
		"$(POD_NAMESPACE":                    "$(POD_NAMESPACE",
		"cost: $5":                           "cost: $5",
		"trailing $":                         "trailing $",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFieldAndResourceValues(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Labels: map[string]string{"b": "2", "a": `x"y`}},
		Spec: corev1.PodSpec{ServiceAccountName: "sa", Containers: []corev1.Container{{Name: "c",
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m")}}}}},
	}
	opts := Options{PodIP: "10.0.0.5", HostIP: "10.0.0.1"}
	for path, want := range map[string]string{
		"metadata.name": "p", "metadata.namespace": "ns", "spec.serviceAccountName": "sa",
		"status.podIP": "10.0.0.5", "status.hostIP": "10.0.0.1", "metadata.labels['b']": "2",
		"metadata.labels": "a=\"x\\\"y\"\nb=\"2\"",
	} {
		if got, err := fieldValue(pod, path, opts); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", path, got, err, want)
		}
	}
	for ref, want := range map[corev1.ResourceFieldSelector]string{
		{ContainerName: "c", Resource: "limits.cpu"}:                                        "2", // rounded up
		{ContainerName: "c", Resource: "limits.cpu", Divisor: resource.MustParse("1m")}:     "1500",
		{ContainerName: "c", Resource: "limits.memory", Divisor: resource.MustParse("1Gi")}: "8", // the node's
		{ContainerName: "c", Resource: "requests.memory"}:                                   "0",
	} {
		if got, err := resourceValue(pod, &ref); err != nil || got != want {
			t.Errorf("%+v = %q, %v; want %q", ref, got, err, want)
		}
	}
}
