package inject

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// FuzzWorkload mutates the golden inputs (as JSON; their "kind" says which workload they are,
// a Deployment when it says nothing known) and the fields the decision depends on.
// Properties: no panic; Injected iff the template changed; everything else untouched; a
// second pass over the stored result changes nothing; a workload with no Emissary image, no
// Emissary label, no opt-in and no status is never modified.
func FuzzWorkload(f *testing.F) {
	for _, name := range inputNames(f) {
		b, err := json.Marshal(object(readWorkload(f, name)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "", "", "", "")
	}
	f.Add([]byte(`{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"aes"}]}}}}`),
		"emissary@sha256:x", "true", "istio-proxy", `{"containers":["a"],"volumes":["x"],"env":["E"],"mounts":["/m"],"annotations":["k"]}`)
	f.Add([]byte(`{"kind":"Pod","metadata":{"labels":{"product":"aes"}},"spec":{"hostNetwork":true,"containers":[{"name":"ambassador","image":"x","command":["agent"]}]}}`),
		"", "true", "", "")

	// Both modes, and the native sidecar: one of them per input, chosen by its length.
	configs := []*Config{DefaultConfig()}
	for _, yml := range []string{"mode: istio-injector\nrevision: canary", "nativeSidecar: true"} {
		cfg, err := ParseConfig([]byte(header + yml))
		if err != nil {
			f.Fatal(err)
		}
		configs = append(configs, cfg)
	}
	f.Fuzz(func(t *testing.T, doc []byte, image, inject, container, status string) {
		cfg := configs[len(doc)%len(configs)]
		var kind struct{ Kind string }
		if json.Unmarshal(doc, &kind) != nil {
			return
		}
		if kind.Kind != KindDaemonSet && kind.Kind != KindPod {
			kind.Kind = KindDeployment
		}
		// encoding/json, not DecodeWorkload: its case-insensitive keys reach more of the
		// object from fewer bytes.
		objects := map[string]any{KindDeployment: &appsv1.Deployment{}, KindDaemonSet: &appsv1.DaemonSet{}, KindPod: &corev1.Pod{}}
		obj := objects[kind.Kind]
		if json.Unmarshal(doc, obj) != nil {
			return
		}
		w := NewWorkload(obj)
		for _, s := range []string{image, inject, container, status} {
			if !utf8.ValidString(s) { // JSON (and so the API server) cannot carry it
				return
			}
		}
		tmpl := w.Template()
		if image != "" && len(tmpl.Spec.Containers) > 0 {
			tmpl.Spec.Containers[0].Image = image
		}
		for k, v := range map[string]string{AnnotationInject: inject, AnnotationContainer: container, AnnotationStatus: status} {
			if v != "" {
				if tmpl.Annotations == nil {
					tmpl.Annotations = map[string]string{}
				}
				tmpl.Annotations[k] = v
			}
		}
		w.SetTemplate(tmpl)
		before := object(w).DeepCopyObject()
		beforeTmpl := NewWorkload(before).Template()

		res := Apply(w, cfg)

		if res.Changed() == equality.Semantic.DeepEqual(beforeTmpl, w.Template()) {
			t.Fatalf("%s but template changed = %v", res.Action, res.Changed())
		}
		if !res.Changed() && !reflect.DeepEqual(before, object(w)) {
			t.Fatal("modified although not Injected")
		}
		rest := NewWorkload(before.DeepCopyObject())
		rest.SetTemplate(w.Template())
		if !reflect.DeepEqual(object(rest), object(w)) {
			t.Fatal("modified outside the pod template")
		}
		if !emissaryLooking(NewWorkload(before)) && res.Action != Skipped {
			t.Fatalf("non-Emissary %s: %s %s", w.Kind(), res.Action, res.Message)
		}

		first := toJSON(t, object(w))
		stored := roundTrip(t, w)
		if res2 := Apply(stored, cfg); res2.Changed() {
			t.Fatalf("second pass %s/%s: %s\nfirst result: %+v\ninput: %s", res2.Action, res2.Reason, res2.Message, res, toJSON(t, before))
		}
		if second := toJSON(t, object(stored)); !bytes.Equal(first, second) {
			t.Fatalf("second pass changed the object:\n%s\n%s", first, second)
		}
	})
}

// emissaryLooking: anything that could make the injector act on w.
func emissaryLooking(w Workload) bool {
	t := w.Template()
	if _, ok := t.Annotations[AnnotationStatus]; ok {
		return true
	}
	if t.Annotations[AnnotationInject] != "" || w.GetAnnotations()[AnnotationInject] != "" {
		return true
	}
	for _, labels := range []map[string]string{w.GetLabels(), t.Labels} {
		if labels[LabelProduct] != "" || labels[LabelHelmName] != "" {
			return true
		}
	}
	for _, c := range t.Spec.Containers {
		if DefaultConfig().IsEmissaryImage(c.Image) {
			return true
		}
	}
	return false
}

func toJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
