package mutate

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
)

// Paths the handlers are served on; the MutatingWebhookConfiguration names them.
// DeploymentPath serves DaemonSets too: it keeps the path of the configuration that only
// sent Deployments, so that a rolling upgrade never sends a replica a path it does not serve.
const (
	DeploymentPath = "/mutate-deployments"
	PodPath        = "/mutate-pods"
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

// workloadGVKs are the GroupVersionKinds the API server names the workload kinds by.
var workloadGVKs = map[string]schema.GroupVersionKind{
	inject.KindDeployment: {Group: "apps", Version: "v1", Kind: "Deployment"},
	inject.KindDaemonSet:  {Group: "apps", Version: "v1", Kind: "DaemonSet"},
	inject.KindPod:        {Version: "v1", Kind: "Pod"},
}

// Kinds each path serves.
var (
	DeploymentPathKinds = []string{inject.KindDeployment, inject.KindDaemonSet}
	PodPathKinds        = []string{inject.KindPod}
)

// WorkloadHandler injects the istio-proxy sidecar into Emissary's Deployments, DaemonSets
// and bare Pods: it answers with inject.WorkloadPatch, the patch the offline `webhook
// inject` applies.
type WorkloadHandler struct {
	Config  *ConfigHolder
	Metrics *Metrics
	// Mesh is the view of the cluster's Istio; nil renders from Config alone.
	Mesh *MeshCache
	// Kinds are the workload kinds it handles (inject.KindDeployment...); nil: all of them.
	Kinds []string
}

// kind is the workload kind of a request for gvk that h handles, or "".
func (h *WorkloadHandler) kind(gvk schema.GroupVersionKind) string {
	for kind, g := range workloadGVKs {
		if g == gvk && (h.Kinds == nil || slices.Contains(h.Kinds, kind)) {
			return kind
		}
	}
	return ""
}

// handles names the kinds h handles, for messages.
func (h *WorkloadHandler) handles() string {
	kinds := h.Kinds
	if kinds == nil {
		kinds = []string{inject.KindDeployment, inject.KindDaemonSet, inject.KindPod}
	}
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = apiVersionKind(k)
	}
	return strings.Join(names, " or ")
}

// apiVersionKind is "apps/v1 Deployment" for inject.KindDeployment.
func apiVersionKind(kind string) string {
	g := workloadGVKs[kind]
	return strings.TrimPrefix(g.Group+"/"+g.Version, "/") + " " + g.Kind
}

// Handle implements admission.Handler.
func (h *WorkloadHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	kind := h.kind(gvk(req))
	known := kind != ""
	if !known {
		kind = inject.KindDeployment // the metric label of what this handler was not sent for
		if h.Kinds != nil {
			kind = h.Kinds[0]
		}
	}
	if resp, done := precheck(req, known, h.handles(), kind, h.Metrics, start); done {
		return resp
	}
	w, err := inject.DecodeWorkload(kind, req.Object.Raw)
	if err != nil {
		h.Metrics.failed(kind, "decode", start)
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("request.object is not a valid %s: %w", apiVersionKind(kind), err))
	}
	if w.GetNamespace() == "" {
		w.SetNamespace(req.Namespace)
	}
	// The configuration completed from the revision of the cluster's Istio that serves w, and
	// on an UPDATE the stored object: an unchanged pod template keeps its sidecar.
	cfg := h.Config.Load()
	var notes inject.MeshNotes
	if h.Mesh != nil {
		cfg, notes = cfg.ForWorkload(h.Mesh.View(ctx, w.GetNamespace()), w)
	}
	var old inject.Workload
	if req.Operation == admissionv1.Update && len(req.OldObject.Raw) > 0 {
		if o, err := inject.DecodeWorkload(kind, req.OldObject.Raw); err == nil {
			old = o
		}
	}
	res, patch, err := inject.UpdatePatch(w, old, cfg, notes.Unavailable)
	notes.Add(&res)
	if err != nil { // cannot happen: the API types always marshal
		h.Metrics.failed(kind, "patch", start)
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the patch: %w", err))
	}
	action := map[inject.Action]string{inject.Injected: actionMutated, inject.UpToDate: actionUnchanged}[res.Action]
	if action == "" {
		action = actionSkipped
	}
	warnings := res.Warnings
	if patch != nil {
		warnings = append(append([]string{res.Message}, res.Notices...), res.Warnings...)
		// An UPDATE that gets back what is stored already (a server-side apply drops the
		// fields the webhook added in an earlier apply of the same manager, and the patch
		// puts them back) changes nothing for the user: no notice, no "mutated".
		if restores(req, kind, res) {
			action = actionUnchanged
			if res.Reason != inject.ReasonKept {
				res.Reason = inject.ReasonUpToDate
			}
			res.Message = fmt.Sprintf("the integration of %s %s is up to date: the patch restores what the webhook stored", kind, w.GetName())
			warnings = res.Warnings
		}
	}
	logf.FromContext(ctx).Info(res.Message, "kind", kind, "uid", req.UID,
		"action", action, "reason", res.Reason, "dryRun", isDryRun(req))
	h.Metrics.observe(kind, action, res.Reason, start)
	var resp admission.Response
	if patch != nil {
		resp = patchedResponse(res.Message, patch)
	} else {
		resp = admission.Allowed(res.Message)
	}
	resp.Warnings = warnings
	return resp
}

// restores reports whether req is an UPDATE of an object whose stored pod template already
// carries the very injection res made (the same status, whatever the injector version).
func restores(req admission.Request, kind string, res inject.Result) bool {
	if req.Operation != admissionv1.Update || len(req.OldObject.Raw) == 0 || res.Status == nil {
		return false
	}
	old, err := inject.DecodeWorkload(kind, req.OldObject.Raw)
	if err != nil {
		return false
	}
	st, err := inject.ParseStatus(old.Template())
	return err == nil && st.Same(res.Status)
}

func gvk(req admission.Request) schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: req.Kind.Group, Version: req.Kind.Version, Kind: req.Kind.Kind}
}

// precheck answers what no handler acts on: operations other than CREATE and UPDATE (the
// webhook configuration never sends them, a hand-made request might) and objects of a kind
// the handler does not handle (known false; handles names them). Both are allowed unchanged,
// with a message saying why.
func precheck(req admission.Request, known bool, handles, kind string, m *Metrics, start time.Time) (admission.Response, bool) {
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
	if !known {
		m.observe(kind, actionSkipped, "wrong-kind", start)
		return admission.Allowed(fmt.Sprintf("this webhook handles %s, not %s", handles, gvk(req))), true
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
