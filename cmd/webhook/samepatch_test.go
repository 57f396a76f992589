package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	evanphx "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mapping"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mutate"
)

// goldenMesh is the mesh of pkg/mapping's golden tests: default and istio-ns are meshed,
// plain is not, no other namespace exists.
var goldenMesh = mapping.StaticNamespaces{
	"default":  {"istio-injection": "enabled"},
	"istio-ns": {"istio-injection": "enabled"},
	"plain":    {},
}

// TestCLIAppliesTheServersPatch: on every golden input of both kinds (pkg/inject/testdata,
// pkg/mapping/testdata), `webhook inject` prints exactly the object the webhook makes the
// API server store: the real handler, sent the input in an AdmissionReview over HTTP,
// answers with a patch; applied to the input, it gives the CLI's output (for a Deployment,
// but for the empty fields typed encoding adds, which the CLI leaves out), and the CLI says
// what the webhook's warnings say. An object the webhook does not patch is printed as read.
func TestCLIAppliesTheServersPatch(t *testing.T) {
	repo := filepath.Join("..", "..")
	var inputs []string
	for _, dir := range []string{filepath.Join(repo, "pkg", "inject", "testdata"), filepath.Join(repo, "pkg", "mapping", "testdata")} {
		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if !strings.HasSuffix(f, ".golden.yaml") && !strings.HasSuffix(f, ".config.yaml") {
				inputs = append(inputs, f)
			}
		}
	}
	patched := map[string]int{}
	for _, in := range inputs {
		name := filepath.Base(filepath.Dir(filepath.Dir(in))) + "/" + strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			cfgFile := strings.TrimSuffix(in, ".yaml") + ".config.yaml"
			if _, err := os.Stat(cfgFile); err != nil {
				cfgFile = ""
			}
			cfg, err := inject.LoadConfig(cfgFile)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(in)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			all, err := readDocuments(f)
			if err != nil {
				t.Fatal(err)
			}
			var docs []document // leaving out a leading comment
			for _, d := range all {
				if d.Kind != "" {
					docs = append(docs, d)
				}
			}
			if len(docs) != 1 {
				t.Fatalf("%d objects, want one", len(docs))
			}
			doc := docs[0]

			cliOut, cliMsgs, err := transform(context.Background(), doc, cfg, defaultNS, goldenMesh)
			if err != nil {
				t.Fatalf("webhook inject: %v", err)
			}

			raw, err := yaml.YAMLToJSON(doc.raw)
			if err != nil {
				t.Fatal(err)
			}
			resp := review(t, cfg, doc, raw)
			if !resp.Allowed {
				t.Fatalf("the webhook denied it: %+v", resp.Result)
			}
			wantMsgs := make([]string, len(resp.Warnings))
			for i, w := range resp.Warnings {
				wantMsgs[i] = "Warning: " + w
			}
			if len(resp.Patch) == 0 {
				if !bytes.Equal(cliOut, doc.raw) {
					t.Errorf("the webhook leaves it unchanged, the CLI prints:\n%s", cliOut)
				}
			} else {
				patched[doc.Kind]++
				ops, err := evanphx.DecodePatch(resp.Patch)
				if err != nil {
					t.Fatal(err)
				}
				stored, err := ops.Apply(raw)
				if err != nil {
					t.Fatalf("the webhook's patch does not apply: %v", err)
				}
				var want, got map[string]interface{}
				if err := yaml.Unmarshal(stored, &want); err != nil {
					t.Fatal(err)
				}
				if err := yaml.Unmarshal(cliOut, &got); err != nil {
					t.Fatal(err)
				}
				if workloadKind(doc) != "" {
					pruneGenerated(want)
					wantMsgs[0] = "Injected: " + resp.Warnings[0] // the webhook's first warning is its message
				}
				if !reflect.DeepEqual(got, want) {
					w, _ := yaml.Marshal(want)
					t.Errorf("the CLI prints\n%s\nthe webhook's patch stores\n%s", cliOut, w)
				}
			}
			if !reflect.DeepEqual(cliMsgs, wantMsgs) && (len(cliMsgs) > 0 || len(wantMsgs) > 0) {
				t.Errorf("the CLI says %q, the webhook warns %q", cliMsgs, wantMsgs)
			}
		})
	}
	if len(inputs) < 30 || patched["Deployment"] < 10 || patched["Mapping"] < 5 {
		t.Fatalf("%d inputs, %v patched: the golden inputs were not all found", len(inputs), patched)
	}
}

// review sends doc to the real handler of its kind as the API server does (a CREATE in an
// admission.k8s.io/v1 AdmissionReview, POSTed as JSON) and returns its answer.
func review(t *testing.T, cfg *inject.Config, doc document, raw []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	holder := mutate.NewConfigHolder(cfg)
	var h admission.Handler = &mutate.WorkloadHandler{Config: holder, Metrics: mutate.NewMetrics(nil)}
	if doc.Kind == "Mapping" {
		h = &mutate.MappingHandler{Config: holder, Namespaces: goldenMesh, Metrics: mutate.NewMetrics(nil)}
	}
	gv, err := schema.ParseGroupVersion(doc.APIVersion)
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Metadata struct{ Namespace string } `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "cli-vs-server", Operation: admissionv1.Create, Namespace: meta.Metadata.Namespace,
			Kind:   metav1.GroupVersionKind{Group: gv.Group, Version: gv.Version, Kind: doc.Kind},
			Object: runtime.RawExtension{Raw: raw},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	(&admission.Webhook{Handler: h}).ServeHTTP(rec, req)
	var answer admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil || answer.Response == nil {
		t.Fatalf("HTTP %d, answer %s: %v", rec.Code, rec.Body, err)
	}
	return answer.Response
}
