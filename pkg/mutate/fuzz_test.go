package mutate

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mapping"
)

// The fuzz targets here drive the real handlers with admission requests built from fuzzed
// objects, the way the server calls them, and check what the API server relies on:
//   - no panic, and never a 5xx answer;
//   - an error answer (4xx) only for an object that is not a valid object of the kind;
//   - every patch applies cleanly to the request's JSON (github.com/evanphx/json-patch, the
//     library the API server applies webhook patches with);
//   - the patched object decodes as the same kind, and nothing outside what the webhook owns
//     changed (spec.template for a Deployment or DaemonSet, annotations and spec for a Pod; spec.tls, spec.service and the defaulted-tls
//     annotation for a Mapping);
//   - idempotency: admitting the patched object again (as an UPDATE) yields no patch;
//   - a workload the injector has no reason to look at, and a Mapping whose tls the user
//     set, never change.
// Crashers land in testdata/fuzz/<target> and run as regression tests with every `go test`.

var (
	fzMappingGVK = metav1.GroupVersionKind{Group: "getambassador.io", Version: "v2", Kind: "Mapping"}
)

// fzNamespaces is the mesh the Mapping target sees: default (istio-injection) and istio-ns
// (a revision label) are meshed, plain is not, every other namespace does not exist.
var fzNamespaces = mapping.StaticNamespaces{
	"default":  {"istio-injection": "enabled"},
	"istio-ns": {"istio.io/rev": "1-28"},
	"plain":    {},
}

// fzSeeds returns the JSON form of every input YAML in dir (golden outputs and configs
// excluded).
func fzSeeds(f *testing.F, dir string) [][]byte {
	f.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	var out [][]byte
	for _, file := range files {
		if strings.HasSuffix(file, ".golden.yaml") || strings.HasSuffix(file, ".config.yaml") {
			continue
		}
		y, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		j, err := yaml.YAMLToJSON(y)
		if err != nil {
			f.Fatalf("%s: %v", file, err)
		}
		out = append(out, j)
	}
	if len(out) < 5 {
		f.Fatalf("only %d seed inputs in %s", len(out), dir)
	}
	return out
}

func fzRequest(kind metav1.GroupVersionKind, op admissionv1.Operation, ns string, obj, old []byte) admission.Request {
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "fuzz", Kind: kind, Operation: op, Namespace: ns,
		Object: runtime.RawExtension{Raw: obj},
	}}
	if old != nil {
		req.OldObject = runtime.RawExtension{Raw: old}
	}
	return req
}

// fzAdmit calls h and completes the response as admission.Webhook does (patch bytes and
// type). It returns the response and the patched object (nil when there is no patch).
func fzAdmit(t *testing.T, h admission.Handler, req admission.Request) (admission.Response, []byte) {
	t.Helper()
	resp := h.Handle(context.Background(), req)
	if err := resp.Complete(req); err != nil {
		t.Fatalf("response cannot be encoded: %v", err)
	}
	if resp.Result == nil || resp.Result.Message == "" {
		t.Fatalf("an answer without a message: %+v\ninput: %s", resp.AdmissionResponse, req.Object.Raw)
	}
	if resp.Result.Code >= 500 {
		t.Fatalf("5xx answer %d: %s\ninput: %s", resp.Result.Code, resp.Result.Message, req.Object.Raw)
	}
	if !resp.Allowed {
		if resp.Result.Code != http.StatusBadRequest {
			t.Fatalf("denied without a 400 and a message: %+v\ninput: %s", resp.Result, req.Object.Raw)
		}
		return resp, nil
	}
	if len(resp.Patch) == 0 {
		return resp, nil
	}
	if len(resp.Warnings) == 0 && req.Operation == admissionv1.Create { // an UPDATE may only restore what is stored
		t.Errorf("a mutation without a warning: %s", resp.Result.Message)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("undecodable patch %s: %v", resp.Patch, err)
	}
	out, err := patch.Apply(req.Object.Raw)
	if err != nil {
		t.Fatalf("patch does not apply to the input: %v\npatch: %s\ninput: %s", err, resp.Patch, req.Object.Raw)
	}
	return resp, out
}

// fzObject decodes doc as a generic JSON object (nil if it is not one).
func fzObject(doc []byte) map[string]interface{} {
	var m map[string]interface{}
	if json.Unmarshal(doc, &m) != nil {
		return nil
	}
	return m
}

// fzDelete removes the member at path (a chain of object keys) from m, if it is there.
func fzDelete(m map[string]interface{}, path ...string) {
	for _, k := range path[:len(path)-1] {
		next, ok := m[k].(map[string]interface{})
		if !ok {
			return
		}
		m = next
	}
	delete(m, path[len(path)-1])
}

// fzEmissaryLooking reports whether anything could make the injector act on w: an Emissary
// image, a label of Emissary's chart, an inject annotation in either place, or an earlier
// injection's status.
func fzEmissaryLooking(w inject.Workload) bool {
	t := w.Template()
	if _, ok := t.Annotations[inject.AnnotationStatus]; ok {
		return true
	}
	if _, ok := t.Annotations[inject.AnnotationInject]; ok {
		return true
	}
	if _, ok := w.GetAnnotations()[inject.AnnotationInject]; ok {
		return true
	}
	for _, labels := range []map[string]string{w.GetLabels(), t.Labels} {
		if labels[inject.LabelProduct] != "" || labels[inject.LabelHelmName] != "" {
			return true
		}
	}
	for _, c := range t.Spec.Containers {
		if inject.DefaultConfig().IsEmissaryImage(c.Image) {
			return true
		}
	}
	return false
}

// fzTemplate is the pod template of obj as JSON: spec.template, or a Pod itself.
func fzTemplate(obj map[string]interface{}, kind string) map[string]interface{} {
	if kind == inject.KindPod {
		return obj
	}
	spec, _ := obj["spec"].(map[string]interface{})
	tmpl, _ := spec["template"].(map[string]interface{})
	return tmpl
}

// fzSetWorkloadKnobs writes image into the first container and the inject and status
// annotations into the pod template of doc, when given and when doc has the place for them.
func fzSetWorkloadKnobs(doc []byte, kind, image, injectAnn, status string) []byte {
	if image == "" && injectAnn == "" && status == "" {
		return doc
	}
	obj := fzObject(doc)
	tmpl := fzTemplate(obj, kind)
	if tmpl == nil {
		return doc
	}
	if ps, _ := tmpl["spec"].(map[string]interface{}); ps != nil && image != "" {
		if cs, _ := ps["containers"].([]interface{}); len(cs) > 0 {
			if c, _ := cs[0].(map[string]interface{}); c != nil {
				c["image"] = image
			}
		}
	}
	meta, _ := tmpl["metadata"].(map[string]interface{})
	if meta == nil {
		meta = map[string]interface{}{}
		tmpl["metadata"] = meta
	}
	ann, _ := meta["annotations"].(map[string]interface{})
	if ann == nil {
		ann = map[string]interface{}{}
		meta["annotations"] = ann
	}
	for k, v := range map[string]string{inject.AnnotationInject: injectAnn, inject.AnnotationStatus: status} {
		if v != "" {
			ann[k] = v
		}
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return doc
	}
	return out
}

// FuzzAdmitWorkload admits Deployments, DaemonSets and Pods (the kind the document names; a
// Deployment otherwise).
func FuzzAdmitWorkload(f *testing.F) {
	for _, seed := range fzSeeds(f, filepath.Join("..", "inject", "testdata")) {
		f.Add(seed, "default", "", "", "")
	}
	f.Add([]byte(`{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"aes"}]}}}}`), "", "", "", "")
	f.Add([]byte(`{"spec":{"template":{"metadata":null,"spec":{"containers":[{"name":"a","image":"x/emissary:1"}],"volumes":null}}}}`), "ns", "", "", "")
	f.Add([]byte(`{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"nginx"},{"name":"b"}]}}}}`), "default", "emissary@sha256:x", "true", `{"containers":["a"],"volumes":["x"]}`)
	f.Add([]byte(`{"spec":{"template":{"spec":{"containers":[]}}}}`), "default", "", "", "")
	f.Add([]byte(`{"kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"aes"}]}}`), "default", "", "", "")
	f.Add([]byte(`{"kind":"DaemonSet","metadata":{"labels":{"product":"aes"}},"spec":{"template":{"spec":{"containers":[{"name":"emissary-ingress","image":"x"}]}}}}`), "default", "", "", "")
	f.Add([]byte(`null`), "default", "", "", "")
	f.Add([]byte(`[]`), "default", "", "", "")

	gvks := map[string]metav1.GroupVersionKind{
		inject.KindDeployment: {Group: "apps", Version: "v1", Kind: "Deployment"},
		inject.KindDaemonSet:  {Group: "apps", Version: "v1", Kind: "DaemonSet"},
		inject.KindPod:        {Version: "v1", Kind: "Pod"},
	}
	h := &WorkloadHandler{Config: NewConfigHolder(inject.DefaultConfig()), Metrics: NewMetrics(nil)}
	f.Fuzz(func(t *testing.T, doc []byte, ns, image, injectAnn, status string) {
		kind := inject.KindDeployment
		if k, _ := fzObject(doc)["kind"].(string); k == inject.KindDaemonSet || k == inject.KindPod {
			kind = k
		}
		// The knobs steer the fuzzer to the decisions (image, opt-in, an earlier injection)
		// without having to find them byte by byte; the document stays as it was otherwise.
		doc = fzSetWorkloadKnobs(doc, kind, image, injectAnn, status)
		resp, patched := fzAdmit(t, h, fzRequest(gvks[kind], admissionv1.Create, ns, doc, nil))

		// Decoded as the API server decodes (case-sensitive field names).
		in, err := inject.DecodeWorkload(kind, doc)
		decodes := err == nil
		if !resp.Allowed {
			if decodes && len(doc) > 0 && string(doc) != "null" {
				t.Fatalf("rejected a valid %s: %s\ninput: %s", kind, resp.Result.Message, doc)
			}
			return
		}
		if patched == nil {
			return
		}
		if !decodes {
			t.Fatalf("patched an object that is not a %s: %s", kind, doc)
		}
		if !fzEmissaryLooking(in) {
			t.Fatalf("changed a %s that is not Emissary: %s\npatch: %s", kind, doc, resp.Patch)
		}

		// The patched object is a workload of the same apiVersion and kind, and only its pod
		// template changed (a Pod's annotations and spec).
		out, err := inject.DecodeWorkload(kind, patched)
		if err != nil {
			t.Fatalf("patched object is not a %s: %v\n%s", kind, err, patched)
		}
		before, after := fzObject(doc), fzObject(patched)
		if before == nil || after == nil {
			t.Fatalf("not JSON objects:\n%s\n%s", doc, patched)
		}
		if before["apiVersion"] != after["apiVersion"] || before["kind"] != after["kind"] {
			t.Fatalf("type changed: %v/%v -> %v/%v", before["apiVersion"], before["kind"], after["apiVersion"], after["kind"])
		}
		for _, m := range []map[string]interface{}{before, after} {
			if kind == inject.KindPod {
				fzDelete(m, "spec")
				fzDelete(m, "metadata", "annotations")
			} else {
				fzDelete(m, "spec", "template")
			}
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("changed outside the pod template:\ninput:   %s\npatched: %s", doc, patched)
		}
		if len(out.Template().Spec.Containers) == 0 {
			t.Fatalf("patched template has no containers: %s", patched)
		}

		// Admitting what would be stored again changes nothing.
		again, twice := fzAdmit(t, h, fzRequest(gvks[kind], admissionv1.Update, ns, patched, doc))
		if !again.Allowed || twice != nil {
			t.Fatalf("not idempotent: second admission allowed=%v patch=%s (%s)\ninput:   %s\npatched: %s",
				again.Allowed, again.Patch, again.Result.Message, doc, patched)
		}
	})
}

func FuzzAdmitMapping(f *testing.F) {
	for _, seed := range fzSeeds(f, filepath.Join("..", "mapping", "testdata")) {
		f.Add(seed, "default")
	}
	f.Add([]byte(`{"kind":"Mapping","metadata":{"annotations":{"emissary-istio.io/defaulted-tls":"istio-upstream"}},"spec":{"service":"web.plain:80","tls":"istio-upstream"}}`), "ambassador")
	f.Add([]byte(`{"metadata":null,"spec":{"service":"quote.istio-ns"}}`), "")
	f.Add([]byte(`{"metadata":{"annotations":null},"spec":{"service":"quote","tls":null}}`), "default")
	f.Add([]byte(`{"spec":[]}`), "default")
	f.Add([]byte(`{"spec":{"service":7}}`), "default")
	f.Add([]byte(`[]`), "default")

	h := &MappingHandler{Config: NewConfigHolder(inject.DefaultConfig()), Namespaces: fzNamespaces, Metrics: NewMetrics(nil)}
	f.Fuzz(func(t *testing.T, doc []byte, ns string) {
		resp, patched := fzAdmit(t, h, fzRequest(fzMappingGVK, admissionv1.Create, ns, doc, nil))
		before := fzObject(doc)
		if !resp.Allowed {
			if before != nil {
				t.Fatalf("rejected a JSON object: %s\ninput: %s", resp.Result.Message, doc)
			}
			return
		}
		if patched == nil {
			return
		}
		if before == nil {
			t.Fatalf("patched something that is not a JSON object: %s", doc)
		}
		spec, _ := before["spec"].(map[string]interface{})
		if tls, ok := spec["tls"]; ok && tls != nil {
			meta, _ := before["metadata"].(map[string]interface{})
			ann, _ := meta["annotations"].(map[string]interface{})
			if own, _ := ann[mapping.AnnotationDefaulted].(string); own == "" || own != tls {
				t.Fatalf("changed a Mapping whose tls the user set: %s\npatch: %s", doc, resp.Patch)
			}
		}

		after := fzObject(patched)
		if after == nil {
			t.Fatalf("patched object is not a JSON object: %s", patched)
		}
		if before["apiVersion"] != after["apiVersion"] || before["kind"] != after["kind"] {
			t.Fatalf("type changed: %v/%v -> %v/%v", before["apiVersion"], before["kind"], after["apiVersion"], after["kind"])
		}
		// Only what the webhook owns changed. An absent metadata (or annotations) the patch
		// created counts as an empty one.
		for _, m := range []map[string]interface{}{before, after} {
			fzDelete(m, "spec", "tls")
			fzDelete(m, "spec", "service")
			fzDelete(m, "metadata", "annotations", mapping.AnnotationDefaulted)
			if meta, ok := m["metadata"].(map[string]interface{}); ok {
				if a, ok := meta["annotations"].(map[string]interface{}); ok && len(a) == 0 {
					delete(meta, "annotations")
				}
				if len(meta) == 0 {
					delete(m, "metadata")
				}
			}
			if meta, ok := m["metadata"].(map[string]interface{}); ok && meta["annotations"] == nil {
				delete(meta, "annotations")
				if len(meta) == 0 {
					delete(m, "metadata")
				}
			}
			if m["metadata"] == nil {
				delete(m, "metadata")
			}
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("changed more than spec.tls, spec.service and the annotation:\ninput:   %s\npatched: %s", doc, patched)
		}

		again, twice := fzAdmit(t, h, fzRequest(fzMappingGVK, admissionv1.Update, ns, patched, doc))
		if !again.Allowed || twice != nil {
			t.Fatalf("not idempotent: second admission allowed=%v patch=%s (%s)\ninput:   %s\npatched: %s",
				again.Allowed, again.Patch, again.Result.Message, doc, patched)
		}
	})
}
