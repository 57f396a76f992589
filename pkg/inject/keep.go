package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// ReasonKept: an UPDATE whose pod template the user did not change (a scale, a no-op apply,
// a GitOps re-sync) keeps the stored integration although the configuration or the mesh now
// renders another one: a new sidecar is a rollout of the edge, and that waits for the next
// change of the pod template (kubectl rollout restart, a new image), as Istio's own proxies
// wait for their pods' restart. `webhook audit` names such workloads (stale-config).
const ReasonKept = "kept"

// UpdatePatch is WorkloadPatch for an UPDATE of the stored workload old to w, with the rule
// that an update never re-renders the sidecar by surprise:
//
//   - when old carries an injection that cfg would render otherwise, and w's pod template
//     minus the injection equals old's (the user changed nothing the pods run), the stored
//     template is kept: the answer restores it (a server-side apply may have dropped the
//     injected fields) or is no patch at all;
//   - when the mesh could not be read (meshUnavailable), an injected workload keeps its
//     injection even when its template changed: the stored sidecar is put on the new
//     template rather than one rendered from the configuration's defaults.
//
// Anything else (a first injection, an opt-out, a mode switch, a Pod) is WorkloadPatch.
func UpdatePatch(w, old Workload, cfg *Config, meshUnavailable bool) (Result, []byte, error) {
	if old == nil || w.Kind() == KindPod {
		return WorkloadPatch(w, cfg)
	}
	oldT := old.Template()
	oldSt, err := ParseStatus(oldT)
	if oldSt == nil || err != nil {
		return WorkloadPatch(w, cfg)
	}
	probe := copyWorkload(w)
	res := Apply(probe, cfg)
	// Nothing to keep: the same injection (a server-side apply dropped it, the patch puts it
	// back), none at all, or another mode (the user asked for it).
	if !res.Changed() || res.Reason != ReasonInjected || res.Status == nil || res.Status.mode() != oldSt.mode() || res.Status.Same(oldSt) {
		return WorkloadPatch(w, cfg)
	}
	same := sameUserPart(w.Template(), oldT, oldSt)
	if !same && !meshUnavailable {
		return WorkloadPatch(w, cfg)
	}
	kept := oldT.DeepCopy()
	if !same {
		kept = userPart(w.Template())
		if !graft(kept, oldT, oldSt) {
			return WorkloadPatch(w, cfg)
		}
	}
	ref := w.Kind() + " " + objectRef(w)
	res = Result{Action: UpToDate, Reason: ReasonKept, Container: oldSt.EmissaryContainer, Status: oldSt}
	if same {
		res.Message = fmt.Sprintf("kept the stored %s of %s: its pod template did not change, and a new sidecar would roll the edge; the current configuration applies at the next rollout (kubectl rollout restart %s %s -n %s)",
			oldSt.mode().removed(), ref, lower(w.Kind()), w.GetName(), w.GetNamespace())
	} else {
		res.Message = fmt.Sprintf("kept the stored %s of %s on its new pod template: the Istio mesh could not be read, and the stored sidecar is not replaced by one rendered from defaults", oldSt.mode().removed(), ref)
		res.Warnings = append(res.Warnings, ref+": "+res.Message)
	}
	if equalTemplates(kept, w.Template()) {
		return res, nil, nil
	}
	hadVolumes, hadInit := len(w.Template().Spec.Volumes) > 0, len(w.Template().Spec.InitContainers) > 0
	w.SetTemplate(kept)
	res.Action = Injected
	patch, err := templatePatch(w, oldSt, false, hadVolumes, hadInit)
	return res, patch, err
}

// userPart is a copy of t without the injection its status names (t itself when it has none).
func userPart(t *corev1.PodTemplateSpec) *corev1.PodTemplateSpec {
	c := t.DeepCopy()
	if st, err := ParseStatus(c); st != nil && err == nil {
		strip(c, st, false)
	}
	return c
}

// sameUserPart reports whether templates a and b are the same once each has its injection
// removed (b's named by bSt; a may carry it or not), with the API server's defaults applied.
func sameUserPart(a, b *corev1.PodTemplateSpec, bSt *Status) bool {
	y := b.DeepCopy()
	strip(y, bSt, false)
	return equalTemplates(userPart(a), y)
}

// equalTemplates compares with the API server's defaults applied to both.
func equalTemplates(a, b *corev1.PodTemplateSpec) bool {
	x, y := withServerDefaults(a), withServerDefaults(b)
	return sameEncoding(x, y) || equality.Semantic.DeepEqual(x, y)
}

// graft puts on t (which carries no injection) exactly what st says the injection added to
// from, taken from from: the stored sidecar, unchanged, on a new template. It reports false
// when from lacks something st names (it was edited around the webhook).
func graft(t, from *corev1.PodTemplateSpec, st *Status) bool {
	fromSpec, spec := &from.Spec, &t.Spec
	if !graftNamed(&spec.Volumes, fromSpec.Volumes, st.Volumes, indexVolume) {
		return false
	}
	fc, tc := ContainerIndex(fromSpec.Containers, st.EmissaryContainer), ContainerIndex(spec.Containers, st.EmissaryContainer)
	if fc < 0 || tc < 0 {
		return false
	}
	src, dst := &fromSpec.Containers[fc], &spec.Containers[tc]
	if !graftNamed(&dst.Env, src.Env, st.Env, indexEnv) ||
		!graftNamed(&dst.VolumeMounts, src.VolumeMounts, st.Mounts, indexMount) {
		return false
	}
	for _, list := range []struct {
		names    []string
		from, to *[]corev1.Container
	}{{st.Containers, &fromSpec.Containers, &spec.Containers}, {st.InitContainers, &fromSpec.InitContainers, &spec.InitContainers}} {
		for _, name := range list.names {
			i := ContainerIndex(*list.from, name)
			if i < 0 || ContainerIndex(*list.to, name) >= 0 {
				return false
			}
			*list.to = append(*list.to, *(*list.from)[i].DeepCopy())
		}
	}
	if t.Annotations == nil {
		t.Annotations = map[string]string{}
	}
	for _, k := range append(st.Annotations, AnnotationStatus) {
		t.Annotations[k] = from.Annotations[k]
	}
	for _, k := range st.Labels {
		if t.Labels == nil {
			t.Labels = map[string]string{}
		}
		t.Labels[k] = from.Labels[k]
	}
	return true
}

// graftNamed appends to *to each item of from that names (by index's key) lists and *to
// lacks; false when from lacks one of them.
func graftNamed[T any](to *[]T, from []T, names []string, index func([]T, string) int) bool {
	for _, name := range names {
		i := index(from, name)
		if i < 0 {
			return false
		}
		if index(*to, name) < 0 {
			*to = append(*to, from[i])
		}
	}
	return true
}
