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

// WithLostMarker is obj, or, when an UPDATE dropped the AnnotationDefaulted that stored (the
// object before it) carries but kept the spec.tls that annotation records, a copy of obj with
// the annotation back: that tls is still the webhook's, to be decided again. Server-side
// apply can do that: mutating webhooks' additions are owned by no field manager, and Flux
// (kustomize-controller) taking over what kubectl applied adopts kubectl's ownership of the
// annotations map, so its first apply, whose manifest has no annotations, removes the map with
// the webhook's annotation in it while spec.tls stays. Decided without it, the tls would pass
// for the user's and the port-less service would not be pinned: Emissary would use 443.
func WithLostMarker(obj, stored map[string]interface{}) map[string]interface{} {
	oldTLS, oldMarker, _ := tlsAndMarker(stored)
	tls, _, marked := tlsAndMarker(obj)
	if marked || oldTLS == "" || oldMarker != oldTLS || tls != oldTLS {
		return obj
	}
	meta, metaOK := obj["metadata"].(map[string]interface{})
	annotations, annotationsOK := meta["annotations"].(map[string]interface{})
	if !metaOK || (meta["annotations"] != nil && !annotationsOK) {
		return obj // not a Mapping Decide accepts: left to it
	}
	withMarker := map[string]interface{}{AnnotationDefaulted: tls}
	for k, v := range annotations {
		withMarker[k] = v
	}
	copyMeta := map[string]interface{}{}
	for k, v := range meta {
		copyMeta[k] = v
	}
	copyMeta["annotations"] = withMarker
	copyObj := map[string]interface{}{}
	for k, v := range obj {
		copyObj[k] = v
	}
	copyObj["metadata"] = copyMeta
	return copyObj
}

// tlsAndMarker reads spec.tls (when a string) and the AnnotationDefaulted of a Mapping.
func tlsAndMarker(o map[string]interface{}) (tls, marker string, marked bool) {
	spec, _ := o["spec"].(map[string]interface{})
	meta, _ := o["metadata"].(map[string]interface{})
	annotations, _ := meta["annotations"].(map[string]interface{})
	tls, _ = spec["tls"].(string)
	v, marked := annotations[AnnotationDefaulted]
	marker, _ = v.(string)
	return tls, marker, marked
}
