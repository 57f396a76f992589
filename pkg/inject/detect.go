package inject

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Annotation keys and the sidecar's name.
const (
	// AnnotationInject "true" opts a workload in, "false" opts it out (on the Deployment or
	// DaemonSet or on its pod template, or on a Pod; "false" wins).
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

// Labels Emissary's Helm chart puts on its workloads and pod templates (templates/deployment.yaml):
// `product: aes` and `app.kubernetes.io/name: <the chart's name>`. Either one, with a container
// named like Emissary's, makes a workload Emissary's whatever its image is called.
const (
	LabelProduct  = "product"
	ProductAES    = "aes"
	LabelHelmName = "app.kubernetes.io/name"
)

// Detection says whether a workload should get the sidecar, and into which container.
type Detection struct {
	Container string // the Emissary container, when found
	Role      Role   // what that container runs
	By        string // what identified it: its image, its name and the workload's labels, an annotation
	OptIn     bool   // emissary-istio.io/inject is "true" somewhere
	OptOut    bool   // emissary-istio.io/inject is "false" somewhere
	Reason    string // "" when the workload should be injected, else a Reason* constant
	program   string // what Container runs, when it is not the image's entrypoint
	Why       string // why not, as a sentence fragment, when Reason != ""
	// Warnings are for the user whatever happens (e.g. an annotation value that is not a
	// boolean); Notices go with an injection (e.g. an opted-in hostNetwork pod).
	Warnings []string
	Notices  []string
}

// Inject reports whether the workload should be injected.
func (d Detection) Inject() bool { return d.Reason == "" }

// Detect decides on w as it is, with cfg's emissaryImages (nil cfg: DefaultConfig()).
func Detect(w Workload, cfg *Config) Detection {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	return detect(w, w.Template(), cfg)
}

// detect finds the Emissary container of template t of w and decides on its role, the
// opt-in / opt-out annotations, hostNetwork and the hand-written-sidecar rule. Containers
// listed in the template's status annotation are ours and are ignored, so detect gives the
// same answer before and after injection.
//
// The Emissary container is the one emissary-istio.io/container names; else the first
// container whose image is one of emissaryImages (the first that runs the edge, when there
// are several); else, on a workload labelled as Emissary's chart labels it, the first
// container whose name is one of them (the chart names it emissary-ingress); else, on a
// workload that opts in, its only container.
func detect(w Workload, t *corev1.PodTemplateSpec, cfg *Config) Detection {
	var det Detection
	places := []struct {
		what string
		ann  map[string]string
	}{{"pod template", t.Annotations}, {w.Kind(), w.GetAnnotations()}}
	if w.Kind() == KindPod {
		places = places[:1]
		places[0].what = KindPod
	}
	for _, where := range places {
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
	if st, err := ParseStatus(t); err == nil && st != nil {
		for _, c := range st.Containers {
			ours[c] = true
		}
	}
	var candidates []*corev1.Container // the user's containers
	for i := range t.Spec.Containers {
		if c := &t.Spec.Containers[i]; !ours[c.Name] {
			candidates = append(candidates, c)
		}
	}

	named := t.Annotations[AnnotationContainer]
	if named == "" && w.Kind() != KindPod {
		named = w.GetAnnotations()[AnnotationContainer]
	}
	label := emissaryLabel(w, t, cfg)
	byImage := filter(candidates, func(c *corev1.Container) bool { return cfg.IsEmissaryImage(c.Image) })
	switch {
	case named != "" && (det.OptIn || label != "" || len(byImage) > 0): // the annotation alone does not opt in
		i := containerIndex(candidates, named)
		if i < 0 {
			return det.skip(ReasonContainerNotFound, fmt.Sprintf("%s names container %q, which does not exist", AnnotationContainer, named))
		}
		det.pick(candidates[i:i+1], AnnotationContainer+" names it")
	case det.pick(byImage, "its image"):
	case label != "" && det.pick(filter(candidates, func(c *corev1.Container) bool { return matchName(cfg.EmissaryImages, c.Name) }),
		fmt.Sprintf("its name and the label %s", label)):
	case !det.OptIn && helperImage(candidates) != nil:
		c := helperImage(candidates)
		r := helperImages[helperImagePattern(c.Image)]
		return det.skip(string(r), fmt.Sprintf("container %q runs %s (image %s), not Emissary's edge", c.Name, r.describe(), ImageRepository(c.Image)))
	case !det.OptIn && label != "":
		return det.skip(ReasonUnknownImage, fmt.Sprintf("it is labelled %s, but no container runs an image in emissaryImages or has Emissary's container name; add its image to emissaryImages or annotate %s: \"true\"", label, AnnotationInject))
	case !det.OptIn:
		return det.skip(ReasonNotEmissary, fmt.Sprintf("no container runs an image that emissaryImages (%s) matches and it has no %s: \"true\" annotation", strings.Join(cfg.EmissaryImages, ", "), AnnotationInject))
	case len(candidates) == 1:
		det.pick(candidates, AnnotationInject+" opts in")
	default:
		return det.skip(ReasonContainerNotFound, fmt.Sprintf("it opts in but none of its %d containers runs an Emissary image; name one with %s", len(candidates), AnnotationContainer))
	}

	if det.Role != RoleEdge && !det.OptIn {
		return det.skip(string(det.Role), fmt.Sprintf("container %q runs %s (%s), not Emissary's edge", det.Container, det.Role.describe(), det.program))
	}
	if (hasContainer(t.Spec.Containers, ProxyContainerName) && !ours[ProxyContainerName]) || userNativeProxy(t) {
		return det.skip(ReasonHandWrittenSidecar, "it already has an istio-proxy container that the injector did not add (a hand-written integration)")
	}
	if t.Spec.HostNetwork {
		if !det.OptIn {
			return det.skip(ReasonHostNetwork, fmt.Sprintf("it uses hostNetwork, which Istio does not inject either (istio-proxy would bind ports 15000, 15020, 15090 on the node); annotate %s: \"true\" to inject anyway", AnnotationInject))
		}
		det.Notices = append(det.Notices, "it uses hostNetwork: istio-proxy binds ports 15000, 15020 and 15090 on the node")
	}
	return det
}

// pick chooses the Emissary container among cs: the first that runs the edge, else the
// first. It reports whether there was one.
func (d *Detection) pick(cs []*corev1.Container, by string) bool {
	if len(cs) == 0 {
		return false
	}
	chosen := cs[0]
	for _, c := range cs {
		if r, _ := ContainerRole(c); r == RoleEdge {
			chosen = c
			break
		}
	}
	d.Role, d.program = ContainerRole(chosen)
	d.Container, d.By = chosen.Name, by
	return true
}

// emissaryLabel is the first label of Emissary's chart on w or its template ("product=aes"),
// or "".
func emissaryLabel(w Workload, t *corev1.PodTemplateSpec, cfg *Config) string {
	for _, ls := range []map[string]string{w.GetLabels(), t.Labels} {
		if ls[LabelProduct] == ProductAES {
			return LabelProduct + "=" + ProductAES
		}
		if n := ls[LabelHelmName]; n != "" && matchName(cfg.EmissaryImages, n) {
			return LabelHelmName + "=" + n
		}
	}
	return ""
}

// helperImage is the first of cs that runs one of Emissary's helper images, or nil.
func helperImage(cs []*corev1.Container) *corev1.Container {
	for _, c := range cs {
		if helperImagePattern(c.Image) != "" {
			return c
		}
	}
	return nil
}

func filter(cs []*corev1.Container, keep func(*corev1.Container) bool) []*corev1.Container {
	var out []*corev1.Container
	for _, c := range cs {
		if keep(c) {
			out = append(out, c)
		}
	}
	return out
}

func (d Detection) skip(reason, why string) Detection {
	d.Reason, d.Why = reason, why
	return d
}

func containerIndex(cs []*corev1.Container, name string) int {
	for i, c := range cs {
		if c.Name == name {
			return i
		}
	}
	return -1
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
