package inject

import (
	"regexp"
	"strings"
	"testing"
)

func TestImageReference(t *testing.T) {
	const digest = "@sha256:4b3a3e1c2f0d5e6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c"
	for _, tc := range []struct {
		ref, repo string
		emissary  bool
	}{
		{"docker.io/emissaryingress/emissary:3.10.0", "docker.io/emissaryingress/emissary", true},
		{"ghcr.io/emissary-ingress/emissary:3.10.0", "ghcr.io/emissary-ingress/emissary", true},
		{"gcr.io/datawire/emissary:2.5.1", "gcr.io/datawire/emissary", true},
		{"docker.io/datawire/ambassador:1.14.4", "docker.io/datawire/ambassador", true},
		{"docker.io/datawire/aes:1.14.2", "docker.io/datawire/aes", true},
		{"quay.io/datawire/ambassador:0.53.1", "quay.io/datawire/ambassador", true},
		{"registry:5000/datawire/aes:3.0", "registry:5000/datawire/aes", true},
		{"localhost:5000/emissary", "localhost:5000/emissary", true},
		{"docker.io/datawire/aes" + digest, "docker.io/datawire/aes", true},
		{"registry.local:5000/emissary/emissary" + digest, "registry.local:5000/emissary/emissary", true},
		{"docker.io/datawire/aes:3.0" + digest, "docker.io/datawire/aes", true},
		{"emissary", "emissary", true},
		{"ambassador:latest", "ambassador", true},
		{"foo/emissary-sidecar", "foo/emissary-sidecar", false},
		{"emissaryingress/emissary-ingress:3.10.0", "emissaryingress/emissary-ingress", true},
		{"mirror.example:5000/datawire/ambassador-edge-stack:3.10.0" + digest, "mirror.example:5000/datawire/ambassador-edge-stack", true},
		{"docker.io/ambassador/ambassador-agent:1.0.14", "docker.io/ambassador/ambassador-agent", false},
		{"ghcr.io/emissary-ingress/apiext:4.1.0", "ghcr.io/emissary-ingress/apiext", false},
		{"docker.io/emissary/nginx:1.27", "docker.io/emissary/nginx", false},
		{"registry.emissary:5000/app:1.0", "registry.emissary:5000/app", false},
		{"emissary:5000/app", "emissary:5000/app", false},
		{"docker.io/istio/proxyv2:1.28.0", "docker.io/istio/proxyv2", false},
		{"docker.io/datawire/AES:1.0", "docker.io/datawire/AES", false},
		{"", "", false},
		{"aes@", "aes", true},
		{":/:", ":/", false},
	} {
		if got := ImageRepository(tc.ref); got != tc.repo {
			t.Errorf("ImageRepository(%q) = %q, want %q", tc.ref, got, tc.repo)
		}
		if got := DefaultConfig().IsEmissaryImage(tc.ref); got != tc.emissary {
			t.Errorf("IsEmissaryImage(%q) = %v, want %v", tc.ref, got, tc.emissary)
		}
	}
}

func TestDefaultsToPullAlways(t *testing.T) {
	for ref, want := range map[string]bool{
		"nginx":                    true,
		"nginx:latest":             true,
		"localhost:5000/nginx":     true,
		"nginx:1.27":               false,
		"nginx@sha256:abc":         false,
		"nginx:latest@sha256:abc":  true,
		"localhost:5000/nginx:1.0": false,
	} {
		if got := defaultsToPullAlways(ref); got != want {
			t.Errorf("defaultsToPullAlways(%q) = %v, want %v", ref, got, want)
		}
	}
}

// TestImagePatterns: a pattern matches the last as many path elements of the repository as
// it has, with '*' and '?' inside one element, whatever the registry, tag or digest.
func TestImagePatterns(t *testing.T) {
	for _, tc := range []struct {
		pattern, ref string
		match        bool
	}{
		{"edge", "mirror.example/platform/edge:3.10.0", true},
		{"edge", "mirror.example/platform/edge-proxy:3.10.0", false},
		{"edge-*", "mirror.example/platform/edge-proxy:3.10.0", true},
		{"edge-?", "edge-1@sha256:ab", true},
		{"platform/*", "mirror.example/platform/anything:1", true},
		{"platform/*", "mirror.example/other/anything:1", false},
		{"mirror.example/platform/edge", "mirror.example/platform/edge:1", true},
		{"mirror.example/platform/edge", "other.example/platform/edge:1", false},
		{"localhost:5000/edge", "localhost:5000/edge", true},
		{"a/b/c", "b/c", false},
		{"*", "anything:1", true},
	} {
		if got := matchImage([]string{tc.pattern}, tc.ref); got != tc.match {
			t.Errorf("pattern %q, image %q: match %v, want %v", tc.pattern, tc.ref, got, tc.match)
		}
	}
	for _, bad := range []string{"", "Emissary", "a//b", "/emissary", "emissary/", "[ab]", "a b", `a\b`, "emissary@sha256"} {
		if checkImagePattern(bad) == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

// TestImageRegexpAgrees: the regular expression the webhook configuration's matchConditions
// use sends the webhook exactly the images the injector recognises, for the default patterns
// and for custom ones; and NameRegexp recognises exactly the names matchName does.
func TestImageRegexpAgrees(t *testing.T) {
	refs := []string{"", "emissary", "aes@", ":/:", "x:1", "emissary@sha256:0a", "foo/emissary-sidecar:1"}
	for _, registry := range []string{"", "docker.io/", "localhost:5000/", "mirror.example/team/", "ghcr.io/emissary-ingress/", "edge-1/"} {
		for _, name := range []string{"emissary", "emissary-ingress", "ambassador", "aes", "ambassador-edge-stack", "aes1", "aesx", "edge", "edge-proxy", "edge-1", "apiext", "nginx", "emissaryingress"} {
			for _, suffix := range []string{"", ":3.10.0", "@sha256:4b3a", ":3.10.0@sha256:4b3a", ":latest"} {
				refs = append(refs, registry+name+suffix)
			}
		}
	}
	for _, patterns := range [][]string{DefaultEmissaryImages, {"edge-?", "team/*", "mirror.example/team/edge*", "localhost:5000/emissary"}, {"*"}, {}} {
		image := regexp.MustCompile(ImageRegexp(patterns))
		name := regexp.MustCompile(NameRegexp(patterns))
		for _, ref := range refs {
			if got, want := image.MatchString(ref), matchImage(patterns, ref); got != want {
				t.Errorf("patterns %q, image %q: regexp %v, matcher %v (%s)", patterns, ref, got, want, ImageRegexp(patterns))
			}
			n := ref[strings.LastIndexByte(ref, '/')+1:]
			if got, want := name.MatchString(n), matchName(patterns, n); got != want {
				t.Errorf("patterns %q, name %q: regexp %v, matcher %v (%s)", patterns, n, got, want, NameRegexp(patterns))
			}
		}
	}
}
