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

func withCommand(d *appsv1.Deployment, command ...string) *appsv1.Deployment {
	d.Spec.Template.Spec.Containers[0].Command = command
	return d
}

func labelled(d *appsv1.Deployment, key, value string) *appsv1.Deployment {
	d.Labels = map[string]string{key: value}
	return d
}

func hostNetwork(d *appsv1.Deployment) *appsv1.Deployment {
	d.Spec.Template.Spec.HostNetwork = true
	return d
}

// TestContainerRole: what a container running Emissary's image does, from its command as
// Emissary's manifests write it.
func TestContainerRole(t *testing.T) {
	for _, tc := range []struct {
		command, args []string
		role          Role
	}{
		{nil, nil, RoleEdge},                                      // the chart's emissary-ingress container
		{nil, []string{"--dev-magic"}, RoleEdge},                  // arguments go to entrypoint.sh
		{[]string{"entrypoint"}, nil, RoleEdge},                   // busyambassador's dispatch by argv[0]
		{[]string{"busyambassador", "entrypoint"}, nil, RoleEdge}, // entrypoint.sh's exec
		{[]string{"bash", "/buildroot/ambassador/python/entrypoint.sh"}, nil, RoleEdge},
		{[]string{"/usr/local/bin/entrypoint"}, nil, RoleEdge},
		{[]string{"apiext", "emissary-apiext"}, []string{"--crd-label-selector", "app.kubernetes.io/part-of=emissary-apiext"}, RoleAPIExt},
		{[]string{"busyambassador"}, []string{"apiext"}, RoleAPIExt},
		{[]string{"consul_connect_integration"}, nil, RoleConsulConnector},
		{[]string{"agent"}, nil, RoleAgent},
		{[]string{"kubestatus"}, nil, RoleHelper},
		{[]string{"aes-injector"}, nil, RoleHelper},
		{[]string{"/bin/sh", "-c"}, []string{"exec entrypoint"}, RoleHelper}, // a shell command: not ours to parse
		{[]string{"busyambassador"}, nil, RoleHelper},
	} {
		if got, _ := ContainerRole(&corev1.Container{Command: tc.command, Args: tc.args}); got != tc.role {
			t.Errorf("command %q args %q: role %s, want %s", tc.command, tc.args, got, tc.role)
		}
	}
}

// TestDetectPlaces: the annotations are read on a DaemonSet as on a Deployment, and on a Pod
// (which has no owner object) from its own metadata.
func TestDetectPlaces(t *testing.T) {
	const other = "registry.example/gw:1"
	ds := &appsv1.DaemonSet{}
	ds.Annotations = map[string]string{AnnotationInject: "true"}
	ds.Spec.Template.Spec.Containers = []corev1.Container{{Name: "gw", Image: other}}
	if det := Detect(DaemonSetWorkload{ds}, nil); !det.Inject() || det.Container != "gw" {
		t.Errorf("DaemonSet opt-in: %+v", det)
	}
	pod := &corev1.Pod{}
	pod.Annotations = map[string]string{AnnotationInject: "false"}
	pod.Spec.Containers = []corev1.Container{{Name: "ambassador", Image: "docker.io/emissaryingress/emissary:3.10.0"}}
	if det := Detect(PodWorkload{pod}, nil); det.Reason != ReasonOptOut {
		t.Errorf("Pod opt-out: %+v", det)
	}
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
		{"mirror named emissary-ingress", deployment(nil, nil, "gw=mirror.example/team/emissary-ingress:3.10.0"), "", "gw", 0},
		{"mirror named ambassador-edge-stack", deployment(nil, nil, "gw=mirror.example:5000/ambassador-edge-stack@sha256:0a"), "", "gw", 0},
		{"apiext shares the image", withCommand(deployment(nil, nil, "emissary-apiext="+emissary), "apiext", "emissary-apiext"), string(RoleAPIExt), "emissary-apiext", 0},
		{"the edge among helpers", withCommand(deployment(nil, nil, "status="+emissary, "edge="+emissary), "kubestatus"), "", "edge", 0},
		{"opt-in overrides the role", withCommand(deployment(in, nil, "agent="+emissary), "agent"), "", "agent", 0},
		{"chart labels do not make apiext the edge", labelled(withCommand(deployment(nil, nil, "emissary-ingress="+emissary), "apiext", "emissary-apiext"), "product", "aes"), string(RoleAPIExt), "emissary-ingress", 0},
		{"chart labels and container name", labelled(deployment(nil, nil, "emissary-ingress=mirror.example/edge:1"), "product", "aes"), "", "emissary-ingress", 0},
		{"chart name label", labelled(deployment(nil, nil, "ambassador=mirror.example/edge:1"), LabelHelmName, "emissary-ingress"), "", "ambassador", 0},
		{"container name alone is not enough", deployment(nil, nil, "emissary-ingress=mirror.example/edge:1"), ReasonNotEmissary, "", 0},
		{"labels without an Emissary container", labelled(deployment(nil, nil, "redis=redis:5"), "product", "aes"), ReasonUnknownImage, "", 0},
		{"labels and a helper image", labelled(deployment(nil, nil, "agent=docker.io/ambassador/ambassador-agent:1.0.14"), "product", "aes"), string(RoleAgent), "", 0},
		{"hostNetwork", hostNetwork(deployment(nil, nil, "ambassador="+emissary)), ReasonHostNetwork, "ambassador", 0},
		{"hostNetwork opted in", hostNetwork(deployment(in, nil, "ambassador="+emissary)), "", "ambassador", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			det := Detect(DeploymentWorkload{tc.d}, nil)
			if det.Reason != tc.reason || det.Container != tc.target || len(det.Warnings) != tc.warnings {
				t.Errorf("got reason %q container %q warnings %q, want %q %q %d", det.Reason, det.Container, det.Warnings, tc.reason, tc.target, tc.warnings)
			}
			if det.Inject() != (tc.reason == "") || (det.Reason != "") != (det.Why != "") {
				t.Errorf("inconsistent: %+v", det)
			}
		})
	}
}
