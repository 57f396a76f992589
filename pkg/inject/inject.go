// Package inject decides whether an Emissary workload (a Deployment, a DaemonSet or a bare
// Pod) gets the istio-proxy sidecar of the Emissary + Istio integration, and renders it.
// Everything here is a pure function of the object and the Config; the admission handlers
// and the offline CLI share it.
package inject

import (
	"bytes"
	"fmt"
	"path"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Version is the injector's version, recorded in the status annotation. main sets it with
// -ldflags "-X github.com/emissary-istio/emissary-istio-webhook/pkg/inject.Version=…".
var Version = "dev"

// Action is what Apply did.
type Action string

const (
	Injected Action = "injected"   // template changed (first injection, re-render, or removal)
	UpToDate Action = "up-to-date" // already injected with this config: nothing to change
	Skipped  Action = "skipped"    // not touched at all
)

// Reasons are stable, low-cardinality strings for metric labels and log lines. A workload
// whose Emissary container is not the edge is skipped with its Role as the reason
// (apiext, consul-connector, agent, helper).
const (
	ReasonInjected           = "injected"
	ReasonUpToDate           = "up-to-date"
	ReasonNotEmissary        = "not-emissary"
	ReasonOptOut             = "opt-out"
	ReasonHandWrittenSidecar = "hand-written-sidecar"
	ReasonContainerNotFound  = "container-not-found" // opt-in names a missing container, or no usable container
	ReasonUnknownImage       = "unknown-image"       // labelled as Emissary's, but no container is recognisably Emissary
	ReasonHostNetwork        = "host-network"        // a hostNetwork pod, which Istio does not inject either
	ReasonOwnedPod           = "owned-pod"           // a Pod with an owner (a ReplicaSet...): its owner's template is injected
	ReasonPodImmutable       = "pod-immutable"       // an injected Pod that would change: a Pod's containers cannot
)

// Reasons lists every Reason Apply returns, e.g. to pre-create metric series.
var Reasons = []string{
	ReasonInjected, ReasonUpToDate, ReasonNotEmissary, ReasonOptOut, ReasonHandWrittenSidecar,
	ReasonContainerNotFound, ReasonUnknownImage, ReasonHostNetwork, ReasonOwnedPod, ReasonPodImmutable, ReasonKept,
	string(RoleAPIExt), string(RoleConsulConnector), string(RoleAgent), string(RoleHelper),
}

// mustAct are the skip reasons that leave a workload that is meant to be Emissary's edge
// without the integration: the user hears about them on every admission.
var mustAct = map[string]string{
	ReasonHandWrittenSidecar: "left unchanged: %s; remove it to let the injector manage the sidecar",
	ReasonContainerNotFound:  "not injected: %s",
	ReasonUnknownImage:       "not injected: %s",
	ReasonHostNetwork:        "not injected: %s",
}

// Result says what Apply did and why.
type Result struct {
	Action    Action `json:"action"`
	Reason    string `json:"reason"`
	Container string `json:"container,omitempty"` // the Emissary container, when found
	Message   string `json:"message"`             // one sentence: what was done and why
	// Warnings are for the user on every admission: something keeps the workload from
	// being integrated as meant. Notices describe a change (a conflict the injection worked
	// around): they matter only when the stored object changes.
	Warnings []string `json:"warnings,omitempty"`
	Notices  []string `json:"notices,omitempty"`
	// Status is what the template's status annotation records after an injection (Injected
	// with ReasonInjected, or UpToDate); nil otherwise.
	Status *Status `json:"-"`
}

// Changed reports whether the pod template was modified.
func (r Result) Changed() bool { return r.Action == Injected }

// Deployment is Apply for a Deployment.
func Deployment(d *appsv1.Deployment, cfg *Config) Result {
	if d == nil {
		return Result{Action: Skipped, Reason: ReasonNotEmissary, Message: "no Deployment given"}
	}
	return Apply(DeploymentWorkload{d}, cfg)
}

// Apply applies the injection to w's pod template in place and says what happened.
//
// It strips what the status annotation names, decides with Detect, injects again with cfg and
// compares with the input: Injected iff the template differs semantically (API-server
// defaults and the injector version alone do not count), otherwise w is left exactly as it was.
// So re-applying the same YAML is a no-op and a config change re-renders.
//
// A template that carries our status but must not be injected any more (opted out, no longer
// Emissary's edge, container gone) has the injection removed: Action Injected with the
// skip reason, so that opting out after injection cleans up. A hand-written istio-proxy is
// never touched.
//
// A Pod is its own template, and its containers cannot change once it exists: a Pod is only
// injected when it is created, one that exists (it has a uid) is never injected, re-rendered or
// stripped (ReasonPodImmutable says it should be re-created), and a Pod with an owner is left to
// its owner's template (ReasonOwnedPod).
//
// A first injection (the template carries no status annotation) only adds: it appends to
// spec.volumes, to the Emissary container's env and volumeMounts and to spec.containers
// exactly the items the new status lists, in that order, and sets template annotations.
// The admission handler relies on this to answer with a patch that appends.
//
// cfg must come from DefaultConfig, ParseConfig or LoadConfig; nil means DefaultConfig().
func Apply(w Workload, cfg *Config) Result {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	ref := w.Kind() + " " + objectRef(w)
	var res Result
	say := func(into *[]string, msgs ...string) {
		for _, m := range msgs {
			*into = append(*into, ref+": "+m)
		}
	}
	if owners := w.GetOwnerReferences(); w.Kind() == KindPod && len(owners) > 0 {
		res.Action, res.Reason = Skipped, ReasonOwnedPod
		res.Message = fmt.Sprintf("%s not injected: it belongs to %s %s, whose pod template gets the integration", ref, owners[0].Kind, owners[0].Name)
		return res
	}

	tmpl := w.Template()
	old, err := ParseStatus(tmpl)
	if err != nil {
		say(&res.Warnings, fmt.Sprintf("ignoring %v; treating the pod template as never injected", err))
	}
	// work is what detect and Inject see: the template with the earlier injection stripped
	// from a copy. Without an earlier injection there is nothing to strip and no copy is
	// made: Inject only appends to the template, so its result is always a change and there
	// is nothing to compare.
	work := tmpl
	if old != nil {
		work = tmpl.DeepCopy()
		strip(work, old, false)
	}
	det := detect(w, work, cfg)
	if det.Reason == ReasonHandWrittenSidecar && w.Kind() == KindPod && old != nil && old.mode() == ModeIstioInjector {
		// Istio's injector added its proxy to this Pod after the webhook steered it there: it is
		// Istio's, not a hand-written integration.
		det = detect(w, withoutProxy(work), cfg)
	}
	res.Container = det.Container
	say(&res.Warnings, det.Warnings...)
	mode := chooseMode(w.Kind(), w.GetAnnotations(), work, cfg)
	if det.Inject() {
		say(&res.Warnings, mode.Warnings...)
	}
	// Istio's injector does not inject hostNetwork pods, opted in or not.
	if work.Spec.HostNetwork && mode.Mode == ModeIstioInjector && (det.Inject() || det.Reason == ReasonHostNetwork) {
		det = det.skip(ReasonHostNetwork, mode.hostNetworkWhy())
	}

	immutable := func(why string) Result {
		res.Action, res.Reason = Skipped, ReasonPodImmutable
		res.Message = fmt.Sprintf("%s left unchanged: %s, and a Pod's containers cannot change; delete and re-create it", ref, why)
		say(&res.Warnings, res.Message[len(ref)+1:])
		return res
	}
	if det.Reason == ReasonHandWrittenSidecar || (!det.Inject() && old == nil) {
		if format, ok := mustAct[det.Reason]; ok {
			say(&res.Warnings, fmt.Sprintf(format, det.Why))
		}
		res.Action, res.Reason = Skipped, det.Reason
		res.Message = fmt.Sprintf("%s not injected: %s", ref, det.Why)
		return res
	}
	// A Pod that exists already (an UPDATE: only a stored object has a uid; a CREATE is
	// admitted before the API server gives it one) cannot gain containers: patching it would
	// make the API server refuse the user's own update.
	if old == nil && w.Kind() == KindPod && w.GetUID() != "" {
		return immutable("it was created without " + ProxyContainerName)
	}
	if !det.Inject() { // injected before, not any more: remove it for good
		if w.Kind() == KindPod {
			return immutable("it carries istio-proxy but should not any more (" + det.Why + ")")
		}
		t := tmpl.DeepCopy()
		for _, v := range strip(t, old, true) {
			say(&res.Notices, fmt.Sprintf("kept volume %q that the injector added, because a container still mounts it", v))
		}
		w.SetTemplate(t)
		res.Action, res.Reason = Injected, det.Reason
		res.Message = fmt.Sprintf("removed %s from %s: %s", old.mode().removed(), ref, det.Why)
		return res
	}

	st, notices, err := injectMode(work, mode.Mode, det.Container, serviceName(w), cfg)
	if err != nil { // unreachable after detect; reported rather than panicking
		res.Action, res.Reason, res.Message = Skipped, ReasonContainerNotFound, fmt.Sprintf("%s not injected: %v", ref, err)
		return res
	}
	say(&res.Notices, det.Notices...)
	say(&res.Notices, notices...)
	if v, ok := work.Labels[LabelIstioInject]; ok && istioWouldInject(v) && mode.Mode == ModeSidecar {
		say(&res.Warnings, fmt.Sprintf("pod template label %s=%q makes Istio inject its own sidecar next to %s; remove the label", LabelIstioInject, v, ProxyContainerName))
	}
	res.Status = st
	what := mode.Mode.describe(cfg)
	switch {
	case old == nil: // work is the template: injected in place
		w.SetTemplate(work)
		res.Action, res.Reason = Injected, ReasonInjected
		res.Message = fmt.Sprintf("injected %s into %s for container %q%s", what, ref, det.Container, foundBy(det))
	case sameTemplate(tmpl, work, old, st):
		res.Action, res.Reason = UpToDate, ReasonUpToDate
		res.Message = fmt.Sprintf("%s in %s is up to date", what, ref)
		res.Notices = nil
	case w.Kind() == KindPod:
		res.Status = nil
		return immutable("its " + mode.Mode.removed() + " was rendered with another configuration")
	default:
		res.Action, res.Reason = Injected, ReasonInjected
		res.Message = updated(old, mode.Mode, what, ref, det.Container)
		w.SetTemplate(work)
	}
	if len(mode.Found) > 0 && res.Changed() {
		say(&res.Notices, mode.completed(st))
	}
	return res
}

// withoutProxy is a copy of t without containers or init containers named istio-proxy.
func withoutProxy(t *corev1.PodTemplateSpec) *corev1.PodTemplateSpec {
	c := t.DeepCopy()
	isProxy := func(x corev1.Container) bool { return x.Name == ProxyContainerName }
	c.Spec.Containers = deleteWhere(c.Spec.Containers, isProxy)
	c.Spec.InitContainers = deleteWhere(c.Spec.InitContainers, isProxy)
	return c
}

// foundBy says how the Emissary container was found, when its image did not say it.
func foundBy(det Detection) string {
	if strings.HasPrefix(det.By, "its name") {
		return " (found by " + det.By + ")"
	}
	return ""
}

// sameTemplate compares semantically, with API-server defaults applied to both sides. A status
// that differs only in the injector version counts as equal: upgrading the webhook must not
// restart every Emissary pod on the next apply.
//
// The common case, a re-apply of a stored Deployment, is decided first and cheaply: the stored
// template already carries the server's defaults, so it encodes exactly like the defaulted
// rendering, and before is neither copied nor compared field by field. That is sound because
// defaulting is idempotent: before equal to defaulted(after) implies defaulted(before) equals it
// too.
func sameTemplate(before, after *corev1.PodTemplateSpec, old, cur *Status) bool {
	b := withServerDefaults(after)
	if old != nil && old.Version != cur.Version {
		s := *cur
		s.Version = old.Version
		b.Annotations[AnnotationStatus] = s.String()
	}
	if sameEncoding(before, b) {
		return true
	}
	a := withServerDefaults(before)
	return sameEncoding(a, b) || equality.Semantic.DeepEqual(a, b)
}

// sameEncoding is the fast path of a comparison: equal protobuf encodings mean equal
// templates, because the generated encoding keeps every field and is deterministic (map keys
// sorted, quantities in canonical form), and it costs a fraction of a reflective comparison.
// The converse does not hold (1Gi and 1073741824 are equal quantities with different
// encodings), so false only means "compare semantically".
func sameEncoding(a, b *corev1.PodTemplateSpec) bool {
	x, errX := a.Marshal()
	y, errY := b.Marshal()
	return errX == nil && errY == nil && bytes.Equal(x, y)
}

// Inject adds the sidecar, the volumes, the Emissary container's env and mount and the pod
// annotation to t, which must not carry an earlier injection (Strip it first). workload
// names the Deployment, DaemonSet or Pod (it goes into --serviceCluster). It returns the
// status it recorded on t and notices about conflicts.
//
// Conflicts: when the user already has a volume of the same name, an env var of the same
// name or a mount at the same path on the Emissary container, the user's entry wins: it is
// not duplicated, not recorded in the status (so Strip never removes user data), and a
// warning says so when it differs from what would have been injected. The seed's own YAML,
// which carries the env vars and the mount on its aes container, therefore injects cleanly.
func Inject(t *corev1.PodTemplateSpec, container, workload string, cfg *Config) (*Status, []string, error) {
	spec := &t.Spec
	ci := ContainerIndex(spec.Containers, container)
	if ci < 0 {
		return nil, nil, fmt.Errorf("container %q does not exist", container)
	}
	if hasProxy(spec) {
		return nil, nil, fmt.Errorf("container %q already exists", ProxyContainerName)
	}
	st := &Status{Version: Version, ConfigHash: cfg.modeHash(ModeSidecar), EmissaryContainer: container}
	warnings := addEmissarySide(spec, ci, st, ProxyVolumes(), EmissaryEnv(), EmissaryMounts())
	addProxy(spec, st, ProxyContainer(cfg, workload), cfg)

	// Istio must not inject its own proxy next to ours. A user value that already says no (in
	// any spelling Istio accepts) is the user's and stays. One that would let Istio inject is
	// the exception to "the user wins": it would break the pod, so it is overwritten, with a
	// warning, and recorded so that Strip restores it.
	m := metadataWriter{t: t, st: st}
	switch v, ok := t.Annotations[AnnotationIstioInject]; {
	case !ok:
		m.set(AnnotationIstioInject, "false")
	case istioWouldInject(v):
		m.replaceAnnotation(AnnotationIstioInject, "false", v, "Istio's own sidecar would collide with "+ProxyContainerName)
	}
	t.Annotations[AnnotationStatus] = st.String()
	return st, append(warnings, m.warnings...), nil
}

// istioWouldInject mirrors Istio's reading of sidecar.istio.io/inject: these values (and an
// empty one, which means the namespace default) may inject, anything else means no.
func istioWouldInject(v string) bool {
	switch strings.ToLower(v) {
	case "", "y", "yes", "true", "on":
		return true
	}
	return false
}

// sameVolumeSource compares two volume sources with the server's defaults applied to copies:
// a source holds pointers (configMap, projected...) into the caller's object, which
// defaulting in place would write into.
func sameVolumeSource(a, b corev1.Volume) bool {
	x, y := a.VolumeSource.DeepCopy(), b.VolumeSource.DeepCopy()
	defaultVolume(x)
	defaultVolume(y)
	return equality.Semantic.DeepEqual(x, y)
}

func envValue(e corev1.EnvVar) string {
	if e.ValueFrom != nil {
		return "a valueFrom reference"
	}
	return fmt.Sprintf("%q", e.Value)
}

func indexVolume(vs []corev1.Volume, name string) int {
	for i := range vs {
		if vs[i].Name == name {
			return i
		}
	}
	return -1
}

func indexEnv(es []corev1.EnvVar, name string) int {
	for i := range es {
		if es[i].Name == name {
			return i
		}
	}
	return -1
}

// indexMount matches mount paths as the kernel sees them: "/etc/istio-certs" and
// "/etc/istio-certs/" are the same mount point.
func indexMount(ms []corev1.VolumeMount, mountPath string) int {
	for i := range ms {
		if path.Clean(ms[i].MountPath) == path.Clean(mountPath) {
			return i
		}
	}
	return -1
}

func objectRef(o metav1.Object) string {
	name := o.GetName()
	if name == "" {
		name = o.GetGenerateName() + "*"
	}
	ref := name
	if ns := o.GetNamespace(); ns != "" {
		ref = ns + "/" + name
	}
	// Admission runs before validation, so a name may hold anything. Quote one that is not
	// plain printable text: the API server drops a warning with control characters, and bidi
	// or escape sequences must not reach a terminal.
	if !utf8.ValidString(ref) || strings.ContainsFunc(ref, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return strconv.Quote(ref)
	}
	return ref
}

// serviceName is the workload's name for --serviceCluster. One created with generateName
// has no name yet at admission; its prefix is the stable part.
func serviceName(o metav1.Object) string {
	if n := o.GetName(); n != "" {
		return n
	}
	if p := strings.TrimRight(o.GetGenerateName(), "-"); p != "" {
		return p
	}
	return "emissary"
}
