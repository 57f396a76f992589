package mutate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/mapping"
)

// mappingKind matches getambassador.io Mappings of every served version (v1, v2, v3alpha1):
// the handler reads them as unstructured JSON, so no version's Go types are needed.
var mappingKind = schema.GroupVersionKind{Group: "getambassador.io", Kind: "Mapping"}

// MappingHandler defaults `spec.tls` for Mappings whose upstream is in a meshed namespace:
// it answers with mapping.Patch of mapping.Decide, the patch the offline `webhook inject`
// applies.
type MappingHandler struct {
	Config     *ConfigHolder
	Namespaces mapping.Namespaces
	Metrics    *Metrics
}

// Handle implements admission.Handler.
func (h *MappingHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	got := gvk(req)
	known := got.Group == mappingKind.Group && got.Kind == mappingKind.Kind
	if resp, done := precheck(req, known, mappingKind.String(), kindMapping, h.Metrics, start); done {
		return resp
	}
	obj, err := mapping.Decode(req.Object.Raw)
	if err != nil {
		h.Metrics.failed(kindMapping, "decode", start)
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("request.object is not a valid Mapping: %w", err))
	}
	// The API server fills metadata.namespace before admission; a hand-made request may not.
	if meta, ok := obj["metadata"].(map[string]interface{}); ok && meta["namespace"] == nil && req.Namespace != "" {
		meta["namespace"] = req.Namespace
	}

	log := logf.FromContext(ctx)
	cfg := &h.Config.Load().Mapping
	var stored map[string]interface{}
	if req.Operation == admissionv1.Update {
		stored = storedMapping(req)
	}
	dec, err := mapping.Decide(mapping.WithLostMarker(obj, stored), cfg, cfg.Lookup(ctx, h.Namespaces))
	if errors.Is(err, ErrCacheStale) && (dec.Reason == mapping.ReasonNamespaceUnknown || dec.Reason == mapping.ReasonNotMeshed) {
		// The decision turned on a namespace's labels the cache could not give (a Mapping
		// with its own tls, a scheme or an IP address looks a namespace up only for its
		// warnings, and is answered without them). Answering from stale labels could store
		// the wrong tls for good, and answering "unchanged" would store the Mapping without
		// it: refuse, say why, and let the user apply it again. Workload reviews, which need
		// no namespace, go on.
		h.Metrics.failed(kindMapping, "cache-stale", start)
		log.Info("namespace cache not current; Mapping refused", "kind", kindMapping, "uid", req.UID, "error", err.Error())
		return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{
			Allowed: false,
			Result: &metav1.Status{
				Code: http.StatusServiceUnavailable, Reason: metav1.StatusReasonServiceUnavailable,
				Message: fmt.Sprintf("emissary-istio-webhook cannot decide this Mapping's tls now: %v; nothing was stored, apply it again in a few seconds", err),
			},
		}}
	}
	if err != nil {
		// Decided as if the namespace did not exist: nothing set, nothing taken away.
		log.Error(err, "namespace lookup failed; the Mapping is left unchanged")
	}
	log.Info(dec.Message, "kind", kindMapping, "uid", req.UID,
		"reason", dec.Reason, "serviceNamespace", dec.Namespace, "dryRun", isDryRun(req))

	patch, err := mapping.Patch(obj, dec)
	if err != nil { // cannot happen: the values are strings
		h.Metrics.failed(kindMapping, "patch", start)
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the patch: %w", err))
	}
	if patch == nil {
		action := actionSkipped
		if dec.Reason == mapping.ReasonUpToDate {
			action = actionUnchanged
		}
		h.Metrics.observe(kindMapping, action, dec.Reason, start)
		resp := admission.Allowed(dec.Message)
		resp.Warnings = dec.Warnings
		return resp
	}
	resp := patchedResponse(dec.Message, patch)
	// An UPDATE that gets back what is stored (a client-side re-apply of the original file
	// resets the pinned service, and the patch pins it again) changes nothing for the user.
	if req.Operation == admissionv1.Update && dec.Restores(stored) {
		h.Metrics.observe(kindMapping, actionUnchanged, mapping.ReasonUpToDate, start)
		resp.Warnings = dec.Warnings
		return resp
	}
	h.Metrics.observe(kindMapping, actionMutated, dec.Reason, start)
	resp.Warnings = append([]string{dec.Notice}, dec.Warnings...)
	return resp
}

// storedMapping is the UPDATE's old object, or nil.
func storedMapping(req admission.Request) map[string]interface{} {
	if len(req.OldObject.Raw) == 0 {
		return nil
	}
	old, err := mapping.Decode(req.OldObject.Raw)
	if err != nil {
		return nil
	}
	return old
}
