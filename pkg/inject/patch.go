package inject

import (
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/internal/jsonpatch"
)

// DecodeDeployment reads an apps/v1 Deployment from JSON as the API server does: keys are
// case-sensitive. (encoding/json would also read "Spec" as spec, and a patch of /spec/...
// would then not apply to the object it was decoded from.) Fields this build's API types
// do not know are dropped from the result; the patch leaves them alone in the object.
func DecodeDeployment(raw []byte) (*appsv1.Deployment, error) {
	d := &appsv1.Deployment{}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, d); err != nil {
		return nil, err
	}
	return d, nil
}

// DeploymentPatch runs Deployment on d and returns its Result with the JSON patch
// (RFC 6902) that turns the object d was decoded from into what Deployment made of it; the
// patch is nil when nothing changed. The webhook answers with it and `webhook inject`
// applies it: there is no other way an injection reaches a Deployment.
//
// A first injection (d carries no status annotation) only appended, as Deployment promises,
// and its status lists what. So the patch appends those items and rewrites the small pod
// template metadata: its size is that of what was added whatever the size of the
// Deployment, and fields of the user's containers that this build's API types do not know
// are left alone.
//
// Any other change (a re-render, a removal) replaces the template's metadata, containers and
// volumes whole: the answer is a pure function of the result, and its cost is one marshal of
// what may have changed, never a diff of the whole object.
func DeploymentPatch(d *appsv1.Deployment, cfg *Config) (Result, []byte, error) {
	if d == nil {
		return Deployment(nil, cfg), nil, nil
	}
	_, injectedBefore := d.Spec.Template.Annotations[AnnotationStatus]
	hadVolumes := len(d.Spec.Template.Spec.Volumes) > 0
	hadInitContainers := len(d.Spec.Template.Spec.InitContainers) > 0
	res := Deployment(d, cfg)
	if !res.Changed() {
		return res, nil, nil
	}
	patch, err := templatePatch(&d.Spec.Template, res.Status, !injectedBefore, hadVolumes, hadInitContainers)
	return res, patch, err
}

// templatePatch is DeploymentPatch's patch for the injected template t with status st.
func templatePatch(t *corev1.PodTemplateSpec, st *Status, firstInjection, hadVolumes, hadInitContainers bool) ([]byte, error) {
	var p jsonpatch.Builder
	p.Grow(4096) // an injected Emissary pod template's patch, in one allocation
	p.Add("/spec/template/metadata", &t.ObjectMeta)
	spec := &t.Spec
	if firstInjection && st != nil {
		if ci := ContainerIndex(spec.Containers, st.EmissaryContainer); ci >= 0 {
			c := &spec.Containers[ci]
			container := "/spec/template/spec/containers/" + strconv.Itoa(ci)
			appendItems(&p, "/spec/template/spec/volumes", spec.Volumes, len(st.Volumes))
			appendItems(&p, container+"/env", c.Env, len(st.Env))
			appendItems(&p, container+"/volumeMounts", c.VolumeMounts, len(st.Mounts))
			appendItems(&p, "/spec/template/spec/containers", spec.Containers, len(st.Containers))
			appendItems(&p, "/spec/template/spec/initContainers", spec.InitContainers, len(st.InitContainers))
			return p.Bytes()
		}
	}
	p.Add("/spec/template/spec/containers", spec.Containers)
	// Init containers, which hold the sidecar with nativeSidecar: written whole like the
	// containers, or removed when none are left (only when the request has them: a JSON
	// patch "remove" of a missing path fails).
	switch {
	case len(spec.InitContainers) > 0:
		p.Add("/spec/template/spec/initContainers", spec.InitContainers)
	case hadInitContainers:
		p.Remove("/spec/template/spec/initContainers")
	}
	switch {
	case len(spec.Volumes) > 0:
		p.Add("/spec/template/spec/volumes", spec.Volumes)
	case hadVolumes:
		p.Remove("/spec/template/spec/volumes")
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
