package inject

import "testing"

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
		{"emissaryingress/emissary-ingress:3.10.0", "emissaryingress/emissary-ingress", false},
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
		if got := IsEmissaryImage(tc.ref); got != tc.emissary {
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
