package inject

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

func TestStatusString(t *testing.T) {
	s := &Status{Version: "v1", ConfigHash: "abc", EmissaryContainer: "aes", Containers: []string{"istio-proxy"}}
	const want = `{"version":"v1","configHash":"abc","emissaryContainer":"aes","containers":["istio-proxy"],"volumes":[],"env":[],"mounts":[],"annotations":[]}`
	if got := s.String(); got != want {
		t.Errorf("got %s", got)
	}
}

// Strip undoes Inject exactly, for every golden input that can be injected.
func TestStripUndoesInject(t *testing.T) {
	for _, name := range inputNames(t) {
		w := readWorkload(t, name)
		det := Detect(w, configFor(t, name))
		if !det.Inject() || w.Template().Annotations[AnnotationStatus] != "" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			tmpl := w.Template().DeepCopy()
			if _, _, err := Inject(tmpl, det.Container, w.GetName(), configFor(t, name)); err != nil {
				t.Fatal(err)
			}
			if _, _, err := Inject(tmpl, det.Container, w.GetName(), DefaultConfig()); err == nil {
				t.Error("second Inject without Strip did not fail")
			}
			st, err := Strip(tmpl)
			if err != nil || st == nil {
				t.Fatalf("Strip: %v, %v", st, err)
			}
			if !equality.Semantic.DeepEqual(tmpl, w.Template()) {
				t.Errorf("Strip(Inject(t)) != t:\n%s", toYAML(t, tmpl))
			}
		})
	}
}

func TestStrip(t *testing.T) {
	tmpl := func(status string) *corev1.PodTemplateSpec {
		t := &corev1.PodTemplateSpec{}
		t.Annotations = map[string]string{"user": "x", AnnotationIstioInject: "false"}
		if status != "" {
			t.Annotations[AnnotationStatus] = status
		}
		t.Spec.Containers = []corev1.Container{
			{Name: "aes", Env: []corev1.EnvVar{{Name: "A"}, {Name: "B"}}, VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/m"}, {Name: "u", MountPath: "/u"}}},
			{Name: "istio-proxy"},
			{Name: "other", Env: []corev1.EnvVar{{Name: "A"}}},
		}
		t.Spec.Volumes = []corev1.Volume{{Name: "v"}, {Name: "u"}}
		return t
	}
	t.Run("removes exactly what the status names", func(t *testing.T) {
		got := tmpl(`{"emissaryContainer":"aes","containers":["istio-proxy"],"volumes":["v","gone"],"env":["A"],"mounts":["/m"],"annotations":["sidecar.istio.io/inject"]}`)
		if st, err := Strip(got); err != nil || st == nil {
			t.Fatalf("%v %v", st, err)
		}
		want := tmpl("")
		delete(want.Annotations, AnnotationIstioInject)
		want.Spec.Containers = []corev1.Container{
			{Name: "aes", Env: []corev1.EnvVar{{Name: "B"}}, VolumeMounts: []corev1.VolumeMount{{Name: "u", MountPath: "/u"}}},
			{Name: "other", Env: []corev1.EnvVar{{Name: "A"}}}, // not the Emissary container: untouched
		}
		want.Spec.Volumes = []corev1.Volume{{Name: "u"}}
		if !equality.Semantic.DeepEqual(got, want) {
			t.Errorf("got\n%s\nwant\n%s", toYAML(t, got), toYAML(t, want))
		}
	})
	for name, status := range map[string]string{"no status": "", "unreadable status": "{"} {
		t.Run(name, func(t *testing.T) {
			got := tmpl(status)
			st, err := Strip(got)
			if st != nil || (err != nil) != (status != "") {
				t.Errorf("got %v, %v", st, err)
			}
			if !equality.Semantic.DeepEqual(got, tmpl(status)) {
				t.Error("template changed")
			}
		})
	}
}
