package inject

import "strings"

// emissaryImages are the last path elements of the repositories Emissary ships under:
// docker.io/emissaryingress/emissary, ghcr.io/emissary-ingress/emissary,
// gcr.io/datawire/emissary, docker.io/datawire/ambassador, docker.io/datawire/aes.
var emissaryImages = map[string]bool{"emissary": true, "ambassador": true, "aes": true}

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

// IsEmissaryImage reports whether ref is an Emissary (or Ambassador / AES) image.
func IsEmissaryImage(ref string) bool {
	return emissaryImages[ImageName(ref)]
}
