package inject

import (
	"fmt"
	"path"
	"regexp"
	"strings"
)

// DefaultEmissaryImages are the names Emissary ships its image under, as the last path
// element of the repository: docker.io/emissaryingress/emissary, ghcr.io/emissary-ingress/emissary,
// gcr.io/datawire/emissary, docker.io/datawire/ambassador, docker.io/datawire/aes, and the
// names mirrors and Helm values give it (.../emissary-ingress, .../ambassador-edge-stack).
var DefaultEmissaryImages = []string{"emissary", "emissary-ingress", "ambassador", "aes", "ambassador-edge-stack"}

// An emissaryImages pattern is one or more path elements of lower-case letters, digits, ".",
// "_", "-" and ":" (a registry's port), where "*" stands for any run of characters within one
// element and "?" for one. It matches the last as many path elements of an image's
// repository (tag and digest removed): "emissary" matches every .../emissary,
// "mirror.example/edge/*" every image under that path.
var imagePatternElement = regexp.MustCompile(`^[a-z0-9._:*?-]+$`)

func checkImagePattern(p string) error {
	for _, e := range strings.Split(p, "/") {
		if !imagePatternElement.MatchString(e) {
			return fmt.Errorf("%q is not a pattern like %q or %q: path elements of a-z, 0-9, '.', '_', '-', ':', with '*' and '?' as wildcards", p, "emissary", "mirror.example/edge/*")
		}
	}
	return nil
}

// ImageRepository returns the repository part of an image reference: the digest
// ("@sha256:…") and the tag are removed. A colon only starts a tag when it comes after the
// last "/", so a registry port ("registry:5000/emissary") is kept.
func ImageRepository(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		ref = ref[:i]
	}
	return ref
}

// ImageName is the last path element of the image's repository ("emissary" for
// "ghcr.io/emissary-ingress/emissary:3.10.0").
func ImageName(ref string) string {
	repo := ImageRepository(ref)
	return repo[strings.LastIndexByte(repo, '/')+1:]
}

// matchImage reports whether one of patterns matches the image reference ref.
func matchImage(patterns []string, ref string) bool {
	elems := strings.Split(ImageRepository(ref), "/")
	for _, p := range patterns {
		n := strings.Count(p, "/") + 1
		if n > len(elems) {
			continue
		}
		if ok, _ := path.Match(p, strings.Join(elems[len(elems)-n:], "/")); ok {
			return true
		}
	}
	return false
}

// matchName reports whether the last element of one of patterns matches name: how a
// container's name or an app.kubernetes.io/name label is recognised as Emissary's.
// A last element that is only wildcards matches nothing here: it would match every name.
func matchName(patterns []string, name string) bool {
	for _, p := range patterns {
		last := p[strings.LastIndexByte(p, '/')+1:]
		if strings.Trim(last, "*?") == "" {
			continue
		}
		if ok, _ := path.Match(last, name); ok {
			return true
		}
	}
	return false
}

// IsEmissaryImage reports whether ref is one of the configured emissaryImages.
func (c *Config) IsEmissaryImage(ref string) bool { return matchImage(c.EmissaryImages, ref) }

// ImageRegexp is the RE2 expression (CEL's matches()) that is true of exactly the image
// references that patterns match (IsEmissaryImage). The webhook configuration's
// matchConditions carry it for the default patterns, so that the API server sends the
// webhook only what may be Emissary; the Helm chart renders it from config.emissaryImages.
func ImageRegexp(patterns []string) string {
	alts := make([]string, len(patterns))
	for i, p := range patterns {
		alts[i] = patternRegexp(p, "[^/:@]")
	}
	return `(^|/)` + alternation(alts) + `([:@][^/]*)?$`
}

// NameRegexp is the RE2 expression that is true of exactly the names matchName matches:
// the matchConditions' test of the app.kubernetes.io/name label.
func NameRegexp(patterns []string) string {
	var alts []string
	for _, p := range patterns {
		last := p[strings.LastIndexByte(p, '/')+1:]
		if strings.Trim(last, "*?") != "" {
			alts = append(alts, patternRegexp(last, "[^/]"))
		}
	}
	return `^` + alternation(alts) + `$`
}

// alternation is a group of alts; with none, a group that matches nothing ("a" cannot come
// before the start of the text), written without backslashes so that CEL and YAML take it
// as it is.
func alternation(alts []string) string {
	if len(alts) == 0 {
		return "(a^)"
	}
	return "(" + strings.Join(alts, "|") + ")"
}

// patternRegexp translates a pattern into RE2. In its last element a wildcard stops at ':'
// and '@', where a tag or digest starts (ImageRepository removes them before matching);
// before it, only '/' separates.
func patternRegexp(p, lastAny string) string {
	var b strings.Builder
	last := strings.LastIndexByte(p, '/')
	for i, r := range p {
		wild := "[^/]"
		if i > last {
			wild = lastAny
		}
		switch r {
		case '*':
			b.WriteString(wild + "*")
		case '?':
			b.WriteString(wild)
		case '.':
			b.WriteString("[.]")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
