// Package inject decides whether an Emissary Deployment gets the istio-proxy sidecar of the
// Emissary + Istio integration, and renders it. Everything here is a pure function of the
// object and the Config; the admission handlers and the offline CLI share it.
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
)

// Version is the injector's version, recorded in the status annotation. main sets it with
// -ldflags "-X github.com/emissary-istio/emissary-istio-webhook/pkg/inject.Version=…".
var Version = "dev"

// Action is what Deployment did.
type Action string

const (
	Injected Action = "injected"   // template changed (first injection, re-render, or removal)
	UpToDate Action = "up-to-date" // already injected with this config: nothing to change
	Skipped  Action = "skipped"    // not touched at all
)

// Reasons are stable, low-cardinality strings for metric labels and log lines.
const (
	ReasonInjected           = "injected"
	ReasonUpToDate           = "up-to-date"
	ReasonNotEmissary        = "not-emissary"
	ReasonOptOut             = "opt-out"
	ReasonHandWrittenSidecar = "hand-written-sidecar"
	ReasonContainerNotFound  = "container-not-found" // opt-in names a missing container, or no usable container
	ReasonHostNetwork        = "host-network"        // a hostNetwork pod in istio-injector mode: Istio does not inject it
)

// Result says what Deployment did and why.
type Result struct {
	Action    Action   `json:"action"`
	Reason    string   `json:"reason"`
	Container string   `json:"container,omitempty"` // the Emissary container, when found
	Message   string   `json:"message"`             // one sentence: what was done and why
	Warnings  []string `json:"warnings,omitempty"`  // for the user (kubectl prints them)
	// Status is what the template's status annotation records after an injection (Injected
	// with ReasonInjected, or UpToDate); nil otherwise.
	Status *Status `json:"-"`
}

// Changed reports whether the pod template was modified.
func (r Result) Changed() bool { return r.Action == Injected }

// Deployment applies the injection to d in place and says what happened.
//
// It strips what the status annotation names, decides with Detect, injects again with cfg and
// compares with the input: Injected iff the template differs semantically (API-server
// defaults and the injector version alone do not count), otherwise d is left exactly as it was.
// So re-applying the same YAML is a no-op and a config change re-renders.
//
// A template that carries our status but must not be injected any more (opted out, no longer
// an Emissary Deployment, container gone) has the injection removed: Action Injected with the
// skip reason, so that opting out after injection cleans up. A hand-written istio-proxy is
// never touched.
//
// A first injection (the template carries no status annotation) only adds: it appends to
// spec.volumes, to the Emissary container's env and volumeMounts and to spec.containers (or
// spec.initContainers) exactly the items the new status lists, in that order, and sets pod
// template annotations and labels.
// The admission handler relies on this to answer with a patch that appends.
//
// cfg must come from DefaultConfig, ParseConfig or LoadConfig; nil means DefaultConfig().
func Deployment(d *appsv1.Deployment, cfg *Config) Result {
	if d == nil {
		return Result{Action: Skipped, Reason: ReasonNotEmissary, Message: "no Deployment given"}
	}
	if cfg == nil {
		cfg = DefaultConfig()
	}
	ref := "Deployment " + objectRef(d)
	var res Result
	warn := func(msgs ...string) {
		for _, m := range msgs {
			res.Warnings = append(res.Warnings, ref+": "+m)
		}
	}

	old, err := ParseStatus(&d.Spec.Template)
	if err != nil {
		warn(fmt.Sprintf("ignoring %v; treating the pod template as never injected", err))
	}
	// work is what Detect and Inject see: d with the earlier injection stripped from a copy of
	// its template (the only part strip and Inject touch). Without an earlier injection there
	// is nothing to strip and no copy is made: Inject only appends to d, so its result is
	// always a change and there is nothing to compare.
	work := d
	if old != nil {
		work = &appsv1.Deployment{ObjectMeta: d.ObjectMeta, Spec: appsv1.DeploymentSpec{Template: *d.Spec.Template.DeepCopy()}}
		strip(&work.Spec.Template, old, false)
	}
	det := Detect(work)
	res.Container = det.Container
	warn(det.Warnings...)
	mode := chooseMode(d.Annotations, &work.Spec.Template, cfg)
	if det.Inject() {
		warn(mode.Warnings...)
		if work.Spec.Template.Spec.HostNetwork {
			if mode.Mode == ModeIstioInjector {
				det = det.skip(ReasonHostNetwork, mode.hostNetworkWhy())
			} else {
				warn(mode.hostNetworkWhy())
			}
		}
	}

	if det.Reason == ReasonHandWrittenSidecar || (!det.Inject() && old == nil) {
		switch det.Reason {
		case ReasonHandWrittenSidecar:
			warn("left unchanged: " + det.Why + "; remove it to let the injector manage the sidecar")
		case ReasonContainerNotFound, ReasonHostNetwork: // meant to be integrated, and is not
			warn("not injected: " + det.Why)
		}
		res.Action, res.Reason = Skipped, det.Reason
		res.Message = fmt.Sprintf("%s not injected: %s", ref, det.Why)
		return res
	}
	if !det.Inject() { // injected before, not any more: remove it for good
		t := d.Spec.Template.DeepCopy()
		for _, v := range strip(t, old, true) {
			warn(fmt.Sprintf("kept volume %q that the injector added, because a container still mounts it", v))
		}
		d.Spec.Template = *t
		res.Action, res.Reason = Injected, det.Reason
		res.Message = fmt.Sprintf("removed %s from %s: %s", old.mode().removed(), ref, det.Why)
		return res
	}

	st, warnings, err := injectMode(&work.Spec.Template, mode.Mode, det.Container, serviceName(d), cfg)
	warn(warnings...)
	if err != nil { // unreachable after Detect; reported rather than panicking
		res.Action, res.Reason, res.Message = Skipped, ReasonContainerNotFound, fmt.Sprintf("%s not injected: %v", ref, err)
		return res
	}
	res.Status = st
	what := mode.Mode.describe(cfg)
	switch {
	case old == nil: // work is d: injected in place
		res.Action, res.Reason = Injected, ReasonInjected
		res.Message = fmt.Sprintf("injected %s into %s for container %q", what, ref, det.Container)
	case sameTemplate(&d.Spec.Template, &work.Spec.Template, old, st):
		res.Action, res.Reason = UpToDate, ReasonUpToDate
		res.Message = fmt.Sprintf("%s in %s is up to date", what, ref)
	default:
		res.Action, res.Reason = Injected, ReasonInjected
		res.Message = updated(old, mode.Mode, what, ref, det.Container)
		d.Spec.Template = work.Spec.Template
	}
	if len(mode.Found) > 0 && res.Changed() {
		warn(mode.completed(st))
	}
	return res
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
// annotation to t, which must not carry an earlier injection (Strip it first). deployment
// names the Deployment (it goes into --serviceCluster). It returns the status it recorded on t
// and warnings about conflicts.
//
// Conflicts: when the user already has a volume of the same name, an env var of the same
// name or a mount at the same path on the Emissary container, the user's entry wins: it is
// not duplicated, not recorded in the status (so Strip never removes user data), and a
// warning says so when it differs from what would have been injected. The seed's own YAML,
// which carries the env vars and the mount on its aes container, therefore injects cleanly.
func Inject(t *corev1.PodTemplateSpec, container, deployment string, cfg *Config) (*Status, []string, error) {
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
	addProxy(spec, st, ProxyContainer(cfg, deployment), cfg)

	// Istio must not inject its own proxy next to ours. A user value that already says no (in
	// any spelling Istio accepts) is the user's and stays. One that would let Istio inject is
	// the exception to "the user wins": it would break the pod, so it is overwritten, with a
	// warning, and recorded so that Strip restores it.
	if t.Annotations == nil {
		t.Annotations = map[string]string{}
	}
	if v, ok := t.Annotations[AnnotationIstioInject]; !ok || istioWouldInject(v) {
		if ok {
			warnings = append(warnings, fmt.Sprintf("pod template annotation %s=%q replaced by \"false\": Istio's own sidecar would collide with %s", AnnotationIstioInject, v, ProxyContainerName))
			st.Replaced = map[string]string{AnnotationIstioInject: v}
		}
		t.Annotations[AnnotationIstioInject] = "false"
		st.Annotations = append(st.Annotations, AnnotationIstioInject)
	}
	if v, ok := t.Labels[LabelIstioInject]; ok && istioWouldInject(v) {
		warnings = append(warnings, fmt.Sprintf("pod template label %s=%q makes Istio inject its own sidecar next to %s; remove the label", LabelIstioInject, v, ProxyContainerName))
	}
	t.Annotations[AnnotationStatus] = st.String()
	return st, warnings, nil
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

func objectRef(d *appsv1.Deployment) string {
	name := d.Name
	if name == "" {
		name = d.GenerateName + "*"
	}
	ref := name
	if d.Namespace != "" {
		ref = d.Namespace + "/" + name
	}
	// Admission runs before validation, so a name may hold anything. Quote one that is not
	// plain printable text: the API server drops a warning with control characters, and bidi
	// or escape sequences must not reach a terminal.
	if !utf8.ValidString(ref) || strings.ContainsFunc(ref, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return strconv.Quote(ref)
	}
	return ref
}

// serviceName is the Deployment's name for --serviceCluster. A Deployment created with
// generateName has no name yet at admission; its prefix is the stable part.
func serviceName(d *appsv1.Deployment) string {
	if d.Name != "" {
		return d.Name
	}
	if p := strings.TrimRight(d.GenerateName, "-"); p != "" {
		return p
	}
	return "emissary"
}
