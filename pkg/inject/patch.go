package inject

import (
	"strconv"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/internal/jsonpatch"
)

// WorkloadPatch runs Apply on w and returns its Result with the JSON patch (RFC 6902) that
// turns the object w was decoded from into what Apply made of it; the patch is nil when
// nothing changed. The webhook answers with it and `webhook inject` applies it: there is no
// other way an injection reaches a workload.
//
// A first injection (the template carries no status annotation) only appended, as Apply
// promises, and its status lists what. So the patch appends those items and rewrites the
// small template metadata (a Pod's annotations): its size is that of what was added whatever
// the size of the workload, and fields of the user's containers that this build's API types
// do not know are left alone.
//
// Any other change (a re-render, a removal) replaces the template's metadata, containers and
// volumes whole: the answer is a pure function of the result, and its cost is one marshal of
// what may have changed, never a diff of the whole object.
func WorkloadPatch(w Workload, cfg *Config) (Result, []byte, error) {
	before := w.Template()
	_, injectedBefore := before.Annotations[AnnotationStatus]
	hadVolumes := len(before.Spec.Volumes) > 0
	hadInitContainers := len(before.Spec.InitContainers) > 0
	res := Apply(w, cfg)
	if !res.Changed() {
		return res, nil, nil
	}
	patch, err := templatePatch(w, res.Status, !injectedBefore, hadVolumes, hadInitContainers)
	return res, patch, err
}

// templatePatch is WorkloadPatch's patch for the injected workload w with status st.
func templatePatch(w Workload, st *Status, firstInjection, hadVolumes, hadInitContainers bool) ([]byte, error) {
	t := w.Template()
	var p jsonpatch.Builder
	p.Grow(4096) // an injected Emissary pod template's patch, in one allocation
	prefix := w.TemplatePath()
	if prefix == "" { // a Pod: its metadata is the object's, and only annotations (and labels) change
		p.Add("/metadata/annotations", t.Annotations)
		if st != nil && len(st.Labels) > 0 { // istio-injector mode's; a Pod is only ever injected once
			p.Add("/metadata/labels", t.Labels)
		}
	} else {
		p.Add(prefix+"/metadata", &t.ObjectMeta)
	}
	spec := &t.Spec
	if firstInjection && st != nil {
		if ci := ContainerIndex(spec.Containers, st.EmissaryContainer); ci >= 0 {
			c := &spec.Containers[ci]
			container := prefix + "/spec/containers/" + strconv.Itoa(ci)
			appendItems(&p, prefix+"/spec/volumes", spec.Volumes, len(st.Volumes))
			appendItems(&p, container+"/env", c.Env, len(st.Env))
			appendItems(&p, container+"/volumeMounts", c.VolumeMounts, len(st.Mounts))
			appendItems(&p, prefix+"/spec/containers", spec.Containers, len(st.Containers))
			appendItems(&p, prefix+"/spec/initContainers", spec.InitContainers, len(st.InitContainers))
			return p.Bytes()
		}
	}
	p.Add(prefix+"/spec/containers", spec.Containers)
	// Init containers, which hold the sidecar with nativeSidecar: written whole like the
	// containers, or removed when none are left (only when the request has them: a JSON
	// patch "remove" of a missing path fails).
	switch {
	case len(spec.InitContainers) > 0:
		p.Add(prefix+"/spec/initContainers", spec.InitContainers)
	case hadInitContainers:
		p.Remove(prefix + "/spec/initContainers")
	}
	switch {
	case len(spec.Volumes) > 0:
		p.Add(prefix+"/spec/volumes", spec.Volumes)
	case hadVolumes:
		p.Remove(prefix + "/spec/volumes")
	}
	return p.Bytes()
}

// appendItems adds the last n items of list to the array at path. When they are the whole
// list, the array was empty, null or absent in the request, and is written whole.
func appendItems[T any](p *jsonpatch.Builder, path string, list []T, n int) {
	switch {
	case n <= 0:
	case n >= len(list):
		p.Add(path, list)
	default:
		for i := len(list) - n; i < len(list); i++ {
			p.Add(path+"/-", &list[i])
		}
	}
}
