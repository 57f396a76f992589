package mutate

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
)

// Paths the handlers are served on; the MutatingWebhookConfiguration names them.
const (
	DeploymentPath = "/mutate-deployments"
	MappingPath    = "/mutate-mappings"
)

// ConfigHolder holds the current configuration. Swapping it (a test, or a reload) affects the
// next admission; each admission reads it once.
type ConfigHolder struct{ p atomic.Pointer[inject.Config] }

// NewConfigHolder returns a holder with cfg in it.
func NewConfigHolder(cfg *inject.Config) *ConfigHolder {
	h := &ConfigHolder{}
	h.Store(cfg)
	return h
}

// Load returns the current configuration.
func (h *ConfigHolder) Load() *inject.Config { return h.p.Load() }

// Store replaces the configuration.
func (h *ConfigHolder) Store(cfg *inject.Config) { h.p.Store(cfg) }

var deploymentKind = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}

// DeploymentHandler injects the istio-proxy sidecar into Emissary Deployments: it answers
// with inject.DeploymentPatch, the patch the offline `webhook inject` applies.
type DeploymentHandler struct {
	Config  *ConfigHolder
	Metrics *Metrics
}

// Handle implements admission.Handler.
func (h *DeploymentHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	if resp, done := h.precheck(req, start); done {
		return resp
	}
	d, err := inject.DecodeDeployment(req.Object.Raw)
	if err != nil {
		h.Metrics.failed(kindDeployment, "decode", start)
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("request.object is not a valid apps/v1 Deployment: %w", err))
	}
	if d.Namespace == "" {
		d.Namespace = req.Namespace
	}
	res, patch, err := inject.DeploymentPatch(d, h.Config.Load())
	logf.FromContext(ctx).Info(res.Message, "kind", kindDeployment, "uid", req.UID,
		"action", res.Action, "reason", res.Reason, "dryRun", isDryRun(req))
	if err != nil { // cannot happen: the API types always marshal
		h.Metrics.failed(kindDeployment, "patch", start)
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the patch: %w", err))
	}

	switch res.Action {
	case inject.Injected:
		h.Metrics.observe(kindDeployment, actionMutated, res.Reason, start)
		resp := patchedResponse(res.Message, patch)
		resp.Warnings = append([]string{res.Message}, res.Warnings...)
		return resp
	case inject.UpToDate:
		h.Metrics.observe(kindDeployment, actionUnchanged, res.Reason, start)
	default:
		h.Metrics.observe(kindDeployment, actionSkipped, res.Reason, start)
	}
	resp := admission.Allowed(res.Message)
	resp.Warnings = res.Warnings
	return resp
}

func (h *DeploymentHandler) precheck(req admission.Request, start time.Time) (admission.Response, bool) {
	return precheck(req, deploymentKind, kindDeployment, h.Metrics, start)
}

// precheck answers what neither handler acts on: operations other than CREATE and UPDATE
// (the webhook configuration never sends them, a hand-made request might) and objects of
// another kind. Both are allowed unchanged, with a message saying why.
func precheck(req admission.Request, want schema.GroupVersionKind, kind string, m *Metrics, start time.Time) (admission.Response, bool) {
	// A review without "request" decodes to an empty request: say that, not "operation  is
	// not mutated".
	if req.Operation == "" {
		m.failed(kind, "no-request", start)
		if req.UID == "" {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("the AdmissionReview has no request (request.uid and request.operation are empty)")), true
		}
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("request.operation is empty")), true
	}
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		m.observe(kind, actionSkipped, "operation", start)
		return admission.Allowed(fmt.Sprintf("operation %s is not mutated", req.Operation)), true
	}
	got := schema.GroupVersionKind{Group: req.Kind.Group, Version: req.Kind.Version, Kind: req.Kind.Kind}
	if got.Group != want.Group || got.Kind != want.Kind || (want.Version != "" && got.Version != want.Version) {
		m.observe(kind, actionSkipped, "wrong-kind", start)
		return admission.Allowed(fmt.Sprintf("this webhook handles %s, not %s", want, got)), true
	}
	if len(req.Object.Raw) == 0 {
		m.failed(kind, "no-object", start)
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("request.object is empty: nothing to mutate")), true
	}
	return admission.Response{}, false
}

func isDryRun(req admission.Request) bool { return req.DryRun != nil && *req.DryRun }

// patchedResponse allows with patch, already marshalled (admission.Patched would marshal
// operations again).
func patchedResponse(message string, patch []byte) admission.Response {
	resp := admission.Allowed(message)
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	return resp
}
