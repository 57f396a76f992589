package envtest

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
)

// TestREADMEConfigurationReference keeps the operator guide honest about the configuration
// file: every key of inject.Config has a row in the reference table, and the complete example
// parses.
func TestREADMEConfigurationReference(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	_, reference, found := strings.Cut(readme, "\n## Configuration reference\n")
	if !found {
		t.Fatal(`README has no "## Configuration reference" section`)
	}
	reference, _, _ = strings.Cut(reference, "\n## ")

	for _, key := range configKeys(reflect.TypeFor[inject.Config](), "") {
		if !strings.Contains(reference, "| `"+key+"` |") {
			t.Errorf("configuration key %s has no row in the README's reference table", key)
		}
	}

	const start = "```yaml\napiVersion: " + inject.ConfigAPIVersion + "\nkind: " + inject.ConfigKind + "\n"
	_, example, found := strings.Cut(reference, start)
	if !found {
		t.Fatal("the configuration reference has no complete example")
	}
	example, _, _ = strings.Cut(example, "```")
	if _, err := inject.ParseConfig([]byte("apiVersion: " + inject.ConfigAPIVersion + "\nkind: " + inject.ConfigKind + "\n" + example)); err != nil {
		t.Errorf("the README's example configuration does not parse: %v", err)
	}
}

// configKeys lists the YAML keys of a configuration struct, dotted for the project's own
// nested structs (mapping.tlsContext); other types (resource requirements) are one key.
func configKeys(typ reflect.Type, prefix string) []string {
	var keys []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == typ.PkgPath() {
			keys = append(keys, configKeys(f.Type, prefix+name+".")...)
			continue
		}
		keys = append(keys, prefix+name)
	}
	return keys
}
