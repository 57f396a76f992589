package envtest

import (
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
)

// The documentation pages that tests read: what they show is what the tests run.
const (
	configurationDoc = "docs/configuration.md" // the configuration reference and its complete example
	installDoc       = "docs/install.md"       // "## Install with Helm": the commands testHelmLifecycle runs
)

// docSection is the text of the "## heading" section of the repository's Markdown file rel,
// up to the next "## " heading.
func docSection(t *testing.T, rel, heading string) string {
	t.Helper()
	text, marker := mustRead(t, filepath.Join(RepoRoot(), rel)), "\n## "+heading+"\n"
	if n := strings.Count(text, marker); n != 1 {
		t.Fatalf("%s has %d %q sections, want one", rel, n, "## "+heading)
	}
	_, section, _ := strings.Cut(text, marker)
	section, _, _ = strings.Cut(section, "\n## ")
	return section
}

// configExample is the complete example of the configuration reference (docs/configuration.md).
func configExample(t *testing.T) string {
	t.Helper()
	start := "```yaml\napiVersion: " + inject.ConfigAPIVersion + "\n"
	_, example, found := strings.Cut(mustRead(t, filepath.Join(RepoRoot(), configurationDoc)), start)
	if !found {
		t.Fatalf("%s has no complete example (a yaml block starting with apiVersion)", configurationDoc)
	}
	example, _, _ = strings.Cut(example, "```")
	return "apiVersion: " + inject.ConfigAPIVersion + "\n" + example
}

// TestConfigurationReference keeps the operator guide honest about the configuration file:
// every key of inject.Config has a row in the reference table of docs/configuration.md, and
// its complete example parses.
func TestConfigurationReference(t *testing.T) {
	reference := mustRead(t, filepath.Join(RepoRoot(), configurationDoc))
	for _, key := range configKeys(reflect.TypeFor[inject.Config](), "") {
		if !strings.Contains(reference, "| `"+key+"` |") {
			t.Errorf("configuration key %s has no row in %s's reference table", key, configurationDoc)
		}
	}
	example := configExample(t)
	if !strings.HasPrefix(example, "apiVersion: "+inject.ConfigAPIVersion+"\nkind: "+inject.ConfigKind+"\n") {
		t.Errorf("the complete example does not start with apiVersion and kind %s", inject.ConfigKind)
	}
	if _, err := inject.ParseConfig([]byte(example)); err != nil {
		t.Errorf("%s's example configuration does not parse: %v", configurationDoc, err)
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

// walkRepo calls fn for every file of the repository outside hidden directories, bin/ and
// testdata/, with its path relative to the root (slash-separated).
func walkRepo(t *testing.T, fn func(rel string, raw []byte)) {
	t.Helper()
	root := filepath.Clean(RepoRoot())
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "bin" || name == "dist" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		raw, err := os.ReadFile(path) // follows the chart's symbolic link to the dashboard
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fn(filepath.ToSlash(rel), raw)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReferencedDocumentsExist: every relative link of every Markdown file leads to a file
// of the repository (and, with a #fragment into a Markdown file, to one of its headings);
// a comment or a document that names a Markdown file names one the repository has (from its
// root or from the referring file's directory). Nothing points outside the repository.
func TestReferencedDocumentsExist(t *testing.T) {
	root := filepath.Clean(RepoRoot())
	mention := regexp.MustCompile(`[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md\b`)
	links, mentions := 0, 0
	walkRepo(t, func(rel string, raw []byte) {
		ext := filepath.Ext(rel)
		if ext == ".md" {
			for _, l := range markdownLinks(string(raw)) {
				links++
				if msg := checkLink(root, rel, l.target); msg != "" {
					t.Errorf("%s:%d links to %s: %s", rel, l.line, l.target, msg)
				}
			}
		}
		if ext != ".go" && ext != ".md" && ext != ".yaml" && filepath.Base(rel) != "Makefile" {
			return
		}
		for i, line := range strings.Split(string(raw), "\n") {
			for _, ref := range mention.FindAllString(line, -1) {
				if strings.Contains(line, "://"+ref) || strings.Contains(line, "/"+ref) {
					continue // part of a URL or of a longer path already matched
				}
				mentions++
				fromRoot, fromDir := filepath.Join(root, ref), filepath.Join(root, filepath.Dir(rel), ref)
				switch {
				case !inside(root, fromRoot) && !inside(root, fromDir):
					t.Errorf("%s:%d refers to %s, which is outside the repository", rel, i+1, ref)
				case !exists(fromRoot) && !exists(fromDir):
					t.Errorf("%s:%d refers to %s, which is not in the repository", rel, i+1, ref)
				}
			}
		}
	})
	if links == 0 || mentions == 0 {
		t.Fatalf("%d Markdown links and %d mentions of Markdown files found: the patterns are broken", links, mentions)
	}
	t.Logf("%d Markdown links and %d mentions of Markdown files checked", links, mentions)
}

type mdLink struct {
	target string
	line   int
}

var (
	inlineLink    = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	referenceLink = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$`)
	codeSpan      = regexp.MustCompile("`+[^`]*`+")
	urlScheme     = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// markdownLinks lists the targets of a Markdown text's links ([text](target), and reference
// definitions [label]: target), outside fenced code blocks and code spans.
func markdownLinks(text string) []mdLink {
	var links []mdLink
	fenced := false
	for i, line := range strings.Split(text, "\n") {
		if trimmed := strings.TrimSpace(line); strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		line = codeSpan.ReplaceAllString(line, "")
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			links = append(links, mdLink{m[1], i + 1})
		}
		if m := referenceLink.FindStringSubmatch(line); m != nil {
			links = append(links, mdLink{m[1], i + 1})
		}
	}
	return links
}

// checkLink says what is wrong with a link target in the Markdown file rel, or "".
// Absolute URLs (with a scheme) are not followed.
func checkLink(root, rel, target string) string {
	if urlScheme.MatchString(target) {
		return ""
	}
	path, fragment, _ := strings.Cut(target, "#")
	file := filepath.Join(root, rel) // a bare #fragment is into the file itself
	if path != "" {
		if strings.HasPrefix(path, "/") {
			return "an absolute path: GitHub resolves it against the repository, other viewers do not; make it relative"
		}
		file = filepath.Join(root, filepath.Dir(rel), filepath.FromSlash(path))
		if !inside(root, file) {
			return "it resolves outside the repository"
		}
		if !exists(file) {
			return "no such file in the repository"
		}
	}
	if fragment != "" && filepath.Ext(file) == ".md" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return err.Error()
		}
		if !headingAnchors(string(raw))[fragment] {
			return "no heading of " + filepath.Base(file) + " has the anchor #" + fragment
		}
	}
	return ""
}

// headingAnchors are the anchors GitHub gives a Markdown text's headings: lower case, every
// character but letters, digits, spaces, '-' and '_' dropped, spaces made '-', and a repeated
// anchor numbered -1, -2...
func headingAnchors(text string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	fenced := false
	for line := range strings.SplitSeq(text, "\n") {
		if trimmed := strings.TrimSpace(line); strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fenced = !fenced
			continue
		}
		heading := strings.TrimLeft(line, "#")
		if fenced || heading == line || !strings.HasPrefix(heading, " ") || len(line)-len(heading) > 6 {
			continue
		}
		var slug strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				slug.WriteRune(r)
			case r == ' ':
				slug.WriteRune('-')
			}
		}
		anchor := slug.String()
		if n := seen[anchor]; n > 0 {
			anchors[anchor+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[anchor] = true
		}
		seen[anchor]++
	}
	return anchors
}

func inside(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
