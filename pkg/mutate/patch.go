package mutate

import (
	"bytes"
	"encoding/json"
	"strconv"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
)

// jsonPatch writes a JSON patch (RFC 6902) straight to bytes, marshalling each value once.
// (jsonpatch.JsonPatchOperation marshals a value, then marshals it again through a map: for
// a Deployment that was a fifth of the handler's time.) Paths are written as given, so they
// must need no JSON escaping: the handlers' paths are constants and array indexes.
type jsonPatch struct {
	buf bytes.Buffer
	enc *json.Encoder // writes into buf without an intermediate copy
	err error
}

func (p *jsonPatch) add(path string, value any) { p.op("add", path, value, true) }

func (p *jsonPatch) remove(path string) { p.op("remove", path, nil, false) }

func (p *jsonPatch) op(op, path string, value any, withValue bool) {
	if p.err != nil {
		return
	}
	if p.buf.Len() == 0 {
		p.enc = json.NewEncoder(&p.buf)
		p.buf.WriteByte('[')
	} else {
		p.buf.WriteByte(',')
	}
	p.buf.WriteString(`{"op":"` + op + `","path":"` + path + `"`)
	if withValue {
		p.buf.WriteString(`,"value":`)
		if p.err = p.enc.Encode(value); p.err != nil {
			return
		}
	}
	p.buf.WriteByte('}')
}

// bytes returns the patch; nil when it has no operation.
func (p *jsonPatch) bytes() ([]byte, error) {
	if p.err != nil || p.buf.Len() == 0 {
		return nil, p.err
	}
	p.buf.WriteByte(']')
	return p.buf.Bytes(), nil
}

// patchedResponse allows with patch, already marshalled (admission.Patched would marshal
// operations again).
func patchedResponse(message string, patch []byte) admission.Response {
	resp := admission.Allowed(message)
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	return resp
}

// deploymentPatch turns the injected template t into a patch of the request's object.
//
// A first injection (the request carried no status annotation) only appended, as
// inject.Deployment promises, and its status st lists what. So the patch appends those items and
// rewrites the small pod template metadata: its size is that of what was added whatever the
// size of the Deployment, and fields of the user's containers that this build's API types do
// not know are left alone.
//
// Any other change (a re-render, a removal) replaces the template's metadata, containers and
// volumes whole: the answer is a pure function of the result, and its cost is one marshal of
// what may have changed, never a diff of the whole object.
func deploymentPatch(t *corev1.PodTemplateSpec, st *inject.Status, firstInjection, hadVolumes bool) ([]byte, error) {
	var p jsonPatch
	p.buf.Grow(4096) // an injected Emissary pod template's patch, in one allocation
	p.add("/spec/template/metadata", &t.ObjectMeta)
	spec := &t.Spec
	if firstInjection && st != nil {
		if ci := inject.ContainerIndex(spec.Containers, st.EmissaryContainer); ci >= 0 {
			c := &spec.Containers[ci]
			container := "/spec/template/spec/containers/" + strconv.Itoa(ci)
			appendItems(&p, "/spec/template/spec/volumes", spec.Volumes, len(st.Volumes))
			appendItems(&p, container+"/env", c.Env, len(st.Env))
			appendItems(&p, container+"/volumeMounts", c.VolumeMounts, len(st.Mounts))
			appendItems(&p, "/spec/template/spec/containers", spec.Containers, len(st.Containers))
			return p.bytes()
		}
	}
	p.add("/spec/template/spec/containers", spec.Containers)
	switch {
	case len(spec.Volumes) > 0:
		p.add("/spec/template/spec/volumes", spec.Volumes)
	case hadVolumes:
		p.remove("/spec/template/spec/volumes")
	}
	return p.bytes()
}

// appendItems adds the last n items of list to the array at path. When they are the whole
// list, the array was empty, null or absent in the request, and is written whole.
func appendItems[T any](p *jsonPatch, path string, list []T, n int) {
	switch {
	case n <= 0:
	case n >= len(list):
		p.add(path, list)
	default:
		for i := len(list) - n; i < len(list); i++ {
			p.add(path+"/-", &list[i])
		}
	}
}
