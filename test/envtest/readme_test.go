package envtest

import (
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
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
		if f.Type.Kind() == reflect.Struct && strings.HasPrefix(f.Type.PkgPath(), "github.com/emissary-istio/emissary-istio-webhook/") {
			keys = append(keys, configKeys(f.Type, prefix+name+".")...)
			continue
		}
		keys = append(keys, prefix+name)
	}
	return keys
}

// TestReferencedDocumentsExist: a comment or a document that sends the reader to a
// Markdown file names one the repository has (from its root or from the referring file's
// directory), not one that lives elsewhere.
func TestReferencedDocumentsExist(t *testing.T) {
	root := RepoRoot()
	mention := regexp.MustCompile(`[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md\b`)
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "bin" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".go", ".md", ".yaml":
		default:
			if d.Name() != "Makefile" {
				return nil
			}
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for i, line := range strings.Split(string(raw), "\n") {
			for _, ref := range mention.FindAllString(line, -1) {
				if strings.Contains(line, "://"+ref) || strings.Contains(line, "/"+ref) {
					continue // part of a URL or of a longer path already matched
				}
				checked++
				if !exists(filepath.Join(root, ref)) && !exists(filepath.Join(filepath.Dir(path), ref)) {
					t.Errorf("%s:%d refers to %s, which is not in the repository", rel, i+1, ref)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Fatal("no reference to a Markdown file found: the pattern is broken")
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
