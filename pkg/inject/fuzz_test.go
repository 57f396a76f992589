package inject

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// FuzzDeployment mutates the golden inputs (as JSON) and the fields the decision depends on.
// Properties: no panic; Injected iff the template changed; everything else untouched; a second
// pass over the stored result changes nothing; a Deployment with no Emissary image, no opt-in
// and no status is never modified.
func FuzzDeployment(f *testing.F) {
	for _, name := range inputNames(f) {
		b, err := json.Marshal(readDeployment(f, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "", "", "", "")
	}
	f.Add([]byte(`{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"aes"}]}}}}`),
		"emissary@sha256:x", "true", "istio-proxy", `{"containers":["a"],"volumes":["x"],"env":["E"],"mounts":["/m"],"annotations":["k"]}`)

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
		d := &appsv1.Deployment{}
		if json.Unmarshal(doc, d) != nil {
			return
		}
		for _, s := range []string{image, inject, container, status} {
			if !utf8.ValidString(s) { // JSON (and so the API server) cannot carry it
				return
			}
		}
		tmpl := &d.Spec.Template
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
		before := d.DeepCopy()

		res := Deployment(d, cfg)

		if res.Changed() == equality.Semantic.DeepEqual(before.Spec.Template, d.Spec.Template) {
			t.Fatalf("%s but template changed = %v", res.Action, res.Changed())
		}
		if !res.Changed() && !reflect.DeepEqual(before, d) {
			t.Fatal("modified although not Injected")
		}
		rest := d.DeepCopy()
		rest.Spec.Template = before.Spec.Template
		if !reflect.DeepEqual(rest, before) {
			t.Fatal("modified outside spec.template")
		}
		if !emissaryLooking(before) && res.Action != Skipped {
			t.Fatalf("non-Emissary Deployment: %s %s", res.Action, res.Message)
		}

		first := toJSON(t, d)
		stored := roundTrip(t, d)
		if res2 := Deployment(stored, cfg); res2.Changed() {
			t.Fatalf("second pass %s/%s: %s\nfirst result: %+v\ninput: %s", res2.Action, res2.Reason, res2.Message, res, toJSON(t, before))
		}
		if second := toJSON(t, stored); !bytes.Equal(first, second) {
			t.Fatalf("second pass changed the object:\n%s\n%s", first, second)
		}
	})
}

// emissaryLooking: anything that could make the injector act on d.
func emissaryLooking(d *appsv1.Deployment) bool {
	t := &d.Spec.Template
	if _, ok := t.Annotations[AnnotationStatus]; ok {
		return true
	}
	if t.Annotations[AnnotationInject] != "" || d.Annotations[AnnotationInject] != "" {
		return true
	}
	for _, c := range t.Spec.Containers {
		if IsEmissaryImage(c.Image) {
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
