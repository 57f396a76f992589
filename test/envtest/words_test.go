package envtest

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"testing"
)

// insiderWords are what only this repository's developers understand: the recipe is
// Emissary's "Emissary and Istio" integration guide, not "the seed"; issue numbers and the
// developers' shared directory mean nothing to anyone else.
var insiderWords = []struct {
	pattern *regexp.Regexp
	say     string
}{
	// "seed" as a word or a word's start (seeds, seeded), or a camel-case part (InjectSeedPod).
	{regexp.MustCompile(`(?i:(?:^|[^a-z])seed)|[a-z]Seed`), `say Emissary's "Emissary and Istio" integration guide (or "the guide") instead of "seed"`},
	{regexp.MustCompile(`(?i)\bissues? *#? *[0-9]+`), "no issue numbers: say what the thing is"},
	{regexp.MustCompile(`\.\./shared|shared/seed`), "no links outside the repository"},
}

// insiderWordsIn lists, one per line, every insider word of text (a file called name).
func insiderWordsIn(name, text string) []string {
	var found []string
	for i, line := range strings.Split(text, "\n") {
		for _, w := range insiderWords {
			if m := w.pattern.FindString(line); m != "" {
				found = append(found, fmt.Sprintf("%s:%d: %q: %s", name, i+1, strings.TrimSpace(m), w.say))
			}
		}
	}
	return found
}

// userFacing says whether users read or run the repository file rel (slash-separated): the
// Markdown documents, the chart, the manifests they install, the Makefile (its comments and
// `make help`), the CLI's source (its help text), hack/demo's source (what `make demo`
// prints: its step titles and the files it applies) and the template of docs/PERFORMANCE.md.
// Tests and their testdata are not: names inside tests may stay.
func userFacing(rel string) bool {
	if strings.HasSuffix(rel, "_test.go") {
		return false
	}
	top, _, _ := strings.Cut(rel, "/")
	switch {
	case path.Ext(rel) == ".md", rel == "Makefile", rel == "Dockerfile":
		return true
	case top == "charts", top == "manifests":
		return true
	case strings.HasPrefix(rel, "cmd/webhook/"), strings.HasPrefix(rel, "hack/demo/"), strings.HasPrefix(rel, "test/benchreport/"):
		return path.Ext(rel) == ".go"
	}
	return false
}

// TestUserFacingWords: nothing a user reads or runs says "seed", "issue N" or ../shared.
// `make demo`'s real output is checked too, by TestDemoStopsOnCtrlC.
func TestUserFacingWords(t *testing.T) {
	checked := map[string]bool{}
	walkRepo(t, func(rel string, raw []byte) {
		if !userFacing(rel) {
			return
		}
		top, _, _ := strings.Cut(rel, "/")
		checked[top] = true
		for _, f := range insiderWordsIn(rel, string(raw)) {
			t.Error(f)
		}
		for _, w := range insiderWords { // names too: the chart's templates/NAME
			if m := w.pattern.FindString(rel); m != "" {
				t.Errorf("%s: the file's name has %q: %s", rel, strings.Trim(m, "/"), w.say)
			}
		}
	})
	for _, want := range []string{"README.md", "docs", "charts", "manifests", "Makefile", "cmd", "hack", "test"} {
		if !checked[want] {
			t.Errorf("no file of %s was checked: the walk is broken", want)
		}
	}
}

// TestInsiderWordsPattern: the patterns find what they are for, and not words that merely
// contain the letters.
func TestInsiderWordsPattern(t *testing.T) {
	for text, want := range map[string]bool{
		"the seed's YAML":               true,
		"Seed: the recipe":              true,
		"seeded":                        true,
		"BenchmarkIstioInjectSeedPod":   true,
		"see issue 13":                  true,
		"after issues 10-15":            true,
		"(issue #6)":                    true,
		"[guide](../shared/seed/x.txt)": true,
		"it exceeds the target":         false,
		"proceed, succeed":              false,
		"istio/istio#28929":             false,
		"an issue with the certificate": false,
		"the guide's Deployment":        false,
	} {
		if got := len(insiderWordsIn("x", text)) > 0; got != want {
			t.Errorf("%q: found %v, want %v", text, got, want)
		}
	}
}
