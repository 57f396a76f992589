package mutate

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestTrimNamespace: the cache keeps a namespace's name and labels, and nothing it never reads.
func TestTrimNamespace(t *testing.T) {
	in := NamespaceObject()
	in.Name, in.ResourceVersion, in.UID = "quote", "42", "uid"
	in.Labels = map[string]string{"istio-injection": "enabled"}
	in.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"}
	in.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}

	out, err := TrimNamespace(in)
	if err != nil {
		t.Fatal(err)
	}
	m := out.(*metav1.PartialObjectMetadata)
	if m == in {
		t.Fatal("trimmed in place: the informer may pass an object it already stores")
	}
	if m.Name != "quote" || m.ResourceVersion != "42" || m.Labels["istio-injection"] != "enabled" || m.GroupVersionKind() != in.GroupVersionKind() {
		t.Errorf("lost what is read: %+v", m)
	}
	if m.Annotations != nil || m.ManagedFields != nil || m.UID != "" {
		t.Errorf("kept what is never read: %+v", m)
	}
	if in.Annotations == nil {
		t.Error("modified its input")
	}
	if s, err := TrimNamespace("not a namespace"); err != nil || s != "not a namespace" {
		t.Errorf("other objects: %v, %v", s, err)
	}
}
