package inject

import (
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// Annotation keys and the sidecar's name.
const (
	// AnnotationInject "true" opts a Deployment in, "false" opts it out (on the Deployment or
	// its pod template; "false" wins).
	AnnotationInject = "emissary-istio.io/inject"
	// AnnotationContainer names the Emissary container when the image does not tell.
	AnnotationContainer = "emissary-istio.io/container"
	// AnnotationStatus (pod template) records what the injector added; see Status.
	AnnotationStatus = "emissary-istio.io/status"
	// AnnotationIstioInject / LabelIstioInject control Istio's own sidecar injection.
	AnnotationIstioInject = "sidecar.istio.io/inject"
	LabelIstioInject      = "sidecar.istio.io/inject"

	ProxyContainerName = "istio-proxy"
)

// Detection says whether a Deployment should get the sidecar, and into which container.
type Detection struct {
	Container string   // the Emissary container, when found
	OptIn     bool     // emissary-istio.io/inject is "true" somewhere
	OptOut    bool     // emissary-istio.io/inject is "false" somewhere
	Reason    string   // "" when the Deployment should be injected, else a Reason* constant
	Why       string   // why not, as a sentence fragment, when Reason != ""
	Warnings  []string // e.g. an annotation value that is not a boolean
}

// Inject reports whether the Deployment should be injected.
func (d Detection) Inject() bool { return d.Reason == "" }

// Detect finds the Emissary container and applies the opt-in / opt-out annotations and the
// hand-written-sidecar rule. Containers listed in the template's status annotation are ours and
// are ignored, so Detect gives the same answer before and after injection.
func Detect(d *appsv1.Deployment) Detection {
	var det Detection
	tmpl := &d.Spec.Template
	for _, where := range []struct {
		what string
		ann  map[string]string
	}{{"pod template", tmpl.Annotations}, {"Deployment", d.Annotations}} {
		v, ok := where.ann[AnnotationInject]
		if !ok {
			continue
		}
		switch b, err := strconv.ParseBool(v); {
		case err != nil:
			det.Warnings = append(det.Warnings, fmt.Sprintf("ignoring %s annotation %s=%q: not true or false", where.what, AnnotationInject, v))
		case b:
			det.OptIn = true
		default:
			det.OptOut = true
		}
	}
	if det.OptOut {
		return det.skip(ReasonOptOut, fmt.Sprintf("it opts out with %s: \"false\"", AnnotationInject))
	}

	ours := map[string]bool{}
	if st, err := ParseStatus(tmpl); err == nil && st != nil {
		for _, c := range st.Containers {
			ours[c] = true
		}
	}
	var candidates []corev1.Container // the user's containers
	for _, c := range tmpl.Spec.Containers {
		if !ours[c.Name] {
			candidates = append(candidates, c)
		}
	}
	byImage := ""
	for _, c := range candidates {
		if IsEmissaryImage(c.Image) {
			byImage = c.Name // several Emissary containers: the first one
			break
		}
	}
	if !det.OptIn && byImage == "" {
		return det.skip(ReasonNotEmissary, "no container runs an emissary, ambassador or aes image and it has no "+AnnotationInject+": \"true\" annotation")
	}

	named := tmpl.Annotations[AnnotationContainer]
	if named == "" {
		named = d.Annotations[AnnotationContainer]
	}
	switch {
	case named != "":
		if !hasContainer(candidates, named) {
			return det.skip(ReasonContainerNotFound, fmt.Sprintf("%s names container %q, which does not exist", AnnotationContainer, named))
		}
		det.Container = named
	case byImage != "":
		det.Container = byImage
	case len(candidates) == 1:
		det.Container = candidates[0].Name
	default:
		return det.skip(ReasonContainerNotFound, fmt.Sprintf("it opts in but none of its %d containers runs an Emissary image; name one with %s", len(candidates), AnnotationContainer))
	}

	if hasContainer(candidates, ProxyContainerName) || userNativeProxy(tmpl) {
		return det.skip(ReasonHandWrittenSidecar, "it already has an istio-proxy container that the injector did not add (a hand-written integration)")
	}
	return det
}

func (d Detection) skip(reason, why string) Detection {
	d.Reason, d.Why = reason, why
	return d
}

func hasContainer(cs []corev1.Container, name string) bool {
	return ContainerIndex(cs, name) >= 0
}

// ContainerIndex is the index of the container named name in cs, or -1.
func ContainerIndex(cs []corev1.Container, name string) int {
	for i := range cs {
		if cs[i].Name == name {
			return i
		}
	}
	return -1
}
