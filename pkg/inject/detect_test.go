package inject

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// deployment builds a Deployment from "name=image" container specs.
func deployment(ann, podAnn map[string]string, containers ...string) *appsv1.Deployment {
	d := &appsv1.Deployment{}
	d.Name, d.Namespace = "d", "ns"
	d.Annotations, d.Spec.Template.Annotations = ann, podAnn
	for _, c := range containers {
		name, image, _ := strings.Cut(c, "=")
		d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, corev1.Container{Name: name, Image: image})
	}
	return d
}

func TestDetect(t *testing.T) {
	const (
		emissary = "docker.io/emissaryingress/emissary:3.10.0"
		other    = "registry.example/gw:1"
	)
	in := map[string]string{AnnotationInject: "true"}
	out := map[string]string{AnnotationInject: "false"}
	ours := map[string]string{AnnotationStatus: `{"containers":["istio-proxy"]}`}
	named := func(ann map[string]string, c string) map[string]string {
		m := map[string]string{AnnotationContainer: c}
		for k, v := range ann {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name           string
		d              *appsv1.Deployment
		reason, target string
		warnings       int
	}{
		{"image", deployment(nil, nil, "ambassador="+emissary), "", "ambassador", 0},
		{"first of two images", deployment(nil, nil, "log="+other, "a=docker.io/datawire/aes:1", "b="+emissary), "", "a", 0},
		{"not emissary", deployment(nil, nil, "web=nginx"), ReasonNotEmissary, "", 0},
		{"no containers", deployment(nil, nil), ReasonNotEmissary, "", 0},
		{"opt-out on pod template", deployment(nil, out, "ambassador="+emissary), ReasonOptOut, "", 0},
		{"opt-out on Deployment beats opt-in on template", deployment(out, in, "gw="+other), ReasonOptOut, "", 0},
		{"opt-out spelled False", deployment(map[string]string{AnnotationInject: "False"}, nil, "a="+emissary), ReasonOptOut, "", 0},
		{"opt-in single container", deployment(in, nil, "gw="+other), "", "gw", 0},
		{"opt-in prefers the image", deployment(nil, in, "log="+other, "edge="+emissary), "", "edge", 0},
		{"opt-in two containers, none named", deployment(in, nil, "gw="+other, "log="+other), ReasonContainerNotFound, "", 0},
		{"opt-in names a container", deployment(in, named(nil, "gw"), "log="+other, "gw="+other), "", "gw", 0},
		{"opt-in names a missing container", deployment(named(in, "edge"), nil, "gw="+other, "log="+other), ReasonContainerNotFound, "", 0},
		{"pod template name wins", deployment(named(in, "log"), named(nil, "gw"), "log="+other, "gw="+other), "", "gw", 0},
		{"name picks among images", deployment(named(nil, "b"), nil, "a="+emissary, "b="+emissary), "", "b", 0},
		{"name alone does not opt in", deployment(named(nil, "web"), nil, "web=nginx"), ReasonNotEmissary, "", 0},
		{"not a boolean", deployment(map[string]string{AnnotationInject: "yes"}, nil, "web=nginx"), ReasonNotEmissary, "", 1},
		{"hand-written sidecar", deployment(nil, nil, "aes=docker.io/datawire/aes:1", "istio-proxy=istio/proxyv2:1.5"), ReasonHandWrittenSidecar, "aes", 0},
		{"our sidecar is not hand-written", deployment(nil, ours, "aes=docker.io/datawire/aes:1", "istio-proxy=istio/proxyv2:1.5"), "", "aes", 0},
		{"our sidecar does not count as a container", deployment(in, ours, "gw="+other, "istio-proxy=istio/proxyv2:1.5"), "", "gw", 0},
		{"opt-in naming istio-proxy", deployment(named(in, ProxyContainerName), nil, "istio-proxy="+other), ReasonHandWrittenSidecar, ProxyContainerName, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			det := Detect(tc.d)
			if det.Reason != tc.reason || det.Container != tc.target || len(det.Warnings) != tc.warnings {
				t.Errorf("got reason %q container %q warnings %q, want %q %q %d", det.Reason, det.Container, det.Warnings, tc.reason, tc.target, tc.warnings)
			}
			if det.Inject() != (tc.reason == "") || (det.Reason != "") != (det.Why != "") {
				t.Errorf("inconsistent: %+v", det)
			}
		})
	}
}
