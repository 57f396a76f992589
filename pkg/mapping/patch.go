package mapping

import (
	"encoding/json"
	"errors"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/internal/jsonpatch"
)

// Decode reads a Mapping of any version from JSON as the unstructured object Decide and
// Patch take.
func Decode(raw []byte) (map[string]interface{}, error) {
	var obj map[string]interface{}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, errors.New("not a JSON object")
	}
	return obj, nil
}

// Patch is the JSON patch (RFC 6902) that applies d to obj, the Mapping d was decided on:
// spec.tls with the annotation that marks it as the webhook's and, when the port was pinned,
// spec.service; or, for a revert, the removal of both. It is nil when d changes nothing. The
// webhook answers with it and `webhook inject` applies it: there is no other way a decision
// reaches a Mapping. "add" on an existing member replaces it, so the operations apply
// whatever obj held.
func Patch(obj map[string]interface{}, d Decision) ([]byte, error) {
	const annotationPath = "/metadata/annotations/emissary-istio.io~1defaulted-tls"
	var p jsonpatch.Builder
	switch {
	case !d.Changed():
		return nil, nil
	case d.Revert:
		p.Remove("/spec/tls")
		p.Remove(annotationPath)
		return p.Bytes()
	}
	p.Add("/spec/tls", d.TLS)
	if d.Service != "" {
		p.Add("/spec/service", d.Service)
	}
	meta, _ := obj["metadata"].(map[string]interface{})
	_, hasAnnotations := meta["annotations"].(map[string]interface{})
	switch {
	case hasAnnotations:
		p.Add(annotationPath, d.TLS)
	case meta == nil:
		p.Add("/metadata", map[string]interface{}{"annotations": map[string]string{AnnotationDefaulted: d.TLS}})
	default:
		p.Add("/metadata/annotations", map[string]string{AnnotationDefaulted: d.TLS})
	}
	return p.Bytes()
}
