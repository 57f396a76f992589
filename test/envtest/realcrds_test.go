package envtest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// TestMappingDefaultingOnEmissaryCRDs proves the project's minimal test CRDs faithful: the
// seed's Mapping is defaulted the same way on a control plane with Emissary's real CRDs.
func TestMappingDefaultingOnEmissaryCRDs(t *testing.T) {
	// Emissary's own CRD file, released from its Go module by `make emissary`.
	raw, err := os.ReadFile(filepath.Join(emissaryDir(t), "yaml", "emissary-crds.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "emissary-crds.yaml"), withoutConversionWebhook(t, raw), 0o644); err != nil {
		t.Fatal(err)
	}
	real, err := Start(Options{CRDDirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	defer real.Stop()
	if _, _, err := real.Kubectl(nil, "label", "namespace", "default", "istio-injection=enabled"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		version, spec string
		wantTLS       interface{}
		wantService   string
	}{
		{"v2", "  service: quote\n", "istio-upstream", "quote:80"},
		{"v3alpha1", "  service: quote\n", "istio-upstream", "quote:80"},
		{"v2", "  service: quote\n  tls: false\n", false, "quote"},
	}
	for i, c := range cases {
		name := "real-crd-" + string(rune('a'+i))
		if _, _, err := real.Kubectl([]byte(mappingYAML(c.version, "default", name, c.spec)), "apply", "-f", "-"); err != nil {
			t.Fatal(err)
		}
		out, _, err := real.Kubectl(nil, "get", "mappings.v2.getambassador.io", name, "-n", "default", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(out), &m); err != nil {
			t.Fatal(err)
		}
		tls, _, _ := unstructured.NestedFieldNoCopy(m, "spec", "tls")
		svc, _, _ := unstructured.NestedString(m, "spec", "service")
		if tls != c.wantTLS || svc != c.wantService {
			t.Errorf("%s %q: stored tls=%v service=%q, want tls=%v service=%q", c.version, c.spec, tls, svc, c.wantTLS, c.wantService)
		}
	}
}

// withoutConversionWebhook sets every CRD's conversion strategy to None: the control plane
// has no emissary-apiext service to convert through.
func withoutConversionWebhook(t *testing.T, raw []byte) []byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var out bytes.Buffer
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out.Bytes()
		}
		if err != nil {
			t.Fatal(err)
		}
		obj := map[string]interface{}{}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatal(err)
		}
		if len(obj) == 0 {
			continue
		}
		if err := unstructured.SetNestedField(obj, map[string]interface{}{"strategy": "None"}, "spec", "conversion"); err != nil {
			t.Fatal(err)
		}
		b, err := yaml.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("---\n")
		out.Write(b)
	}
}
