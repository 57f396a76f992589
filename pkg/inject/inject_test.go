package inject

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// TestInjectLeavesUserVolumesAlone: a volume the user already has under a name the sidecar
// needs is compared with the injector's after defaulting both, and the defaulting must not
// write into the user's volume: its configMap and projected sources are pointers.
func TestInjectLeavesUserVolumesAlone(t *testing.T) {
	for _, v := range ProxyVolumes() {
		if v.ConfigMap == nil && v.Projected == nil {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			// The user's copy of the seed's volume, without the fields the server defaults.
			user := *v.DeepCopy()
			if user.ConfigMap != nil {
				user.ConfigMap.DefaultMode = nil
			}
			if user.Projected != nil {
				user.Projected.DefaultMode = nil
			}
			d := deployment(nil, nil, "ambassador=docker.io/emissaryingress/emissary:3.10.0")
			d.Spec.Template.Spec.Volumes = []corev1.Volume{user}
			before := *user.DeepCopy()

			res := Deployment(d, DefaultConfig())
			if res.Action != Injected || len(res.Warnings) != 0 {
				t.Fatalf("got %s with warnings %q; want a clean injection (the volumes are the same once defaulted)", res.Action, res.Warnings)
			}
			if got := d.Spec.Template.Spec.Volumes[0]; !equality.Semantic.DeepEqual(got, before) {
				t.Errorf("the user's volume was changed:\n%s\nwant:\n%s", toYAML(t, got), toYAML(t, before))
			}
		})
	}
}
