package mutate

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// mappingKind matches getambassador.io Mappings of every served version (v1, v2, v3alpha1):
// the handler reads them as unstructured JSON, so no version's Go types are needed.
var mappingKind = schema.GroupVersionKind{Group: "getambassador.io", Kind: "Mapping"}

// MappingHandler defaults `spec.tls` for Mappings whose upstream is in a meshed namespace.
type MappingHandler struct {
	Config     *ConfigHolder
	Namespaces NamespaceLabels
	Metrics    *Metrics
}

// Handle implements admission.Handler.
func (h *MappingHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	if resp, done := precheck(req, mappingKind, kindMapping, h.Metrics, start); done {
		return resp
	}
	var obj map[string]interface{}
	if err := json.Unmarshal(req.Object.Raw, &obj); err != nil || obj == nil {
		h.Metrics.failed(kindMapping, "decode", start)
		if err == nil {
			err = fmt.Errorf("not a JSON object")
		}
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("request.object is not a valid Mapping: %w", err))
	}
	// The API server fills metadata.namespace before admission; a hand-made request may not.
	if meta, ok := obj["metadata"].(map[string]interface{}); ok && meta["namespace"] == nil && req.Namespace != "" {
		meta["namespace"] = req.Namespace
	}

	log := logf.FromContext(ctx)
	cfg := h.Config.Load()
	lookup := MeshLookupFor(ctx, h.Namespaces, cfg.MeshedSelectors(), func(err error) {
		log.Error(err, "namespace lookup failed; the Mapping is left unchanged")
	})
	dec := DecideMapping(obj, cfg.Mapping.TLSContext, lookup)
	log.Info(dec.Message, "kind", kindMapping, "uid", req.UID,
		"reason", dec.Reason, "serviceNamespace", dec.Namespace, "dryRun", isDryRun(req))

	if !dec.Changed() {
		action := actionSkipped
		if dec.Reason == MappingReasonUpToDate {
			action = actionUnchanged
		}
		h.Metrics.observe(kindMapping, action, dec.Reason, start)
		resp := admission.Allowed(dec.Message)
		resp.Warnings = dec.Warnings
		return resp
	}
	patch, err := mappingPatch(obj, dec)
	if err != nil { // cannot happen: the values are strings
		h.Metrics.failed(kindMapping, "patch", start)
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the patch: %w", err))
	}
	h.Metrics.observe(kindMapping, actionMutated, dec.Reason, start)
	resp := patchedResponse(dec.Message, patch)
	resp.Warnings = dec.Warnings
	return resp
}

// mappingPatch writes what dec changes: spec.tls with the annotation that marks it as the
// webhook's and, when the port was pinned, spec.service; or, for a revert, removes both.
// "add" on an existing member replaces it, so the ops are valid whatever the object held.
func mappingPatch(obj map[string]interface{}, dec MappingDecision) ([]byte, error) {
	const annotationPath = "/metadata/annotations/emissary-istio.io~1defaulted-tls"
	var p jsonPatch
	if dec.Revert {
		p.remove("/spec/tls")
		p.remove(annotationPath)
		return p.bytes()
	}
	p.add("/spec/tls", dec.TLS)
	if dec.Service != "" {
		p.add("/spec/service", dec.Service)
	}
	meta, _ := obj["metadata"].(map[string]interface{})
	_, hasAnnotations := meta["annotations"].(map[string]interface{})
	switch {
	case hasAnnotations:
		p.add(annotationPath, dec.TLS)
	case meta == nil:
		p.add("/metadata", map[string]interface{}{"annotations": map[string]string{AnnotationMappingDefaulted: dec.TLS}})
	default:
		p.add("/metadata/annotations", map[string]string{AnnotationMappingDefaulted: dec.TLS})
	}
	return p.bytes()
}

// ApplyMappingDecision writes dec into obj exactly as the webhook's patch would: the offline
// CLI uses it to print what the cluster would store.
func ApplyMappingDecision(obj map[string]interface{}, dec MappingDecision) {
	spec, ok := obj["spec"].(map[string]interface{})
	if !ok || !dec.Changed() {
		return
	}
	meta, _ := obj["metadata"].(map[string]interface{})
	if meta == nil {
		meta = map[string]interface{}{}
		obj["metadata"] = meta
	}
	annotations, _ := meta["annotations"].(map[string]interface{})
	if dec.Revert {
		delete(spec, "tls")
		delete(annotations, AnnotationMappingDefaulted)
		return
	}
	spec["tls"] = dec.TLS
	if dec.Service != "" {
		spec["service"] = dec.Service
	}
	if annotations == nil {
		annotations = map[string]interface{}{}
		meta["annotations"] = annotations
	}
	annotations[AnnotationMappingDefaulted] = dec.TLS
}
