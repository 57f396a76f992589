package inject

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
)

// The kinds of workload the injector handles.
const (
	KindDeployment = "Deployment"
	KindDaemonSet  = "DaemonSet"
	KindPod        = "Pod"
)

// Workload is an object that runs Emissary's pods: a Deployment or a DaemonSet, through
// spec.template, or a bare Pod, which is its own template. Detection, injection, the status
// annotation, strip and the patch work on a Workload, so every kind gets exactly the same
// rules: one code path, whatever owns the pod template.
type Workload interface {
	metav1.Object // the object's own metadata: name, namespace, labels, annotations
	// Kind is KindDeployment, KindDaemonSet or KindPod.
	Kind() string
	// Template is the pod template. A Deployment's or DaemonSet's is its spec.template, changed
	// in place; a Pod's is a view of its metadata and spec that SetTemplate writes back.
	Template() *corev1.PodTemplateSpec
	// SetTemplate stores t as the pod template.
	SetTemplate(t *corev1.PodTemplateSpec)
	// TemplatePath is the JSON pointer of the template's metadata and spec in the object:
	// "/spec/template", or "" for a Pod, whose metadata and spec are the object's own.
	TemplatePath() string
	// deepCopy is a copy of the whole object (and keeps the kinds to this package's).
	deepCopy() Workload
}

// copyWorkload is a deep copy of w.
func copyWorkload(w Workload) Workload { return w.deepCopy() }

// DeploymentWorkload is a Deployment as a Workload.
type DeploymentWorkload struct{ *appsv1.Deployment }

func (DeploymentWorkload) Kind() string                            { return KindDeployment }
func (w DeploymentWorkload) Template() *corev1.PodTemplateSpec     { return &w.Spec.Template }
func (w DeploymentWorkload) SetTemplate(t *corev1.PodTemplateSpec) { setTemplate(&w.Spec.Template, t) }
func (DeploymentWorkload) TemplatePath() string                    { return "/spec/template" }
func (w DeploymentWorkload) deepCopy() Workload                    { return DeploymentWorkload{w.DeepCopy()} }

// DaemonSetWorkload is a DaemonSet as a Workload (Emissary's chart has `daemonSet: true`).
type DaemonSetWorkload struct{ *appsv1.DaemonSet }

func (DaemonSetWorkload) Kind() string                            { return KindDaemonSet }
func (w DaemonSetWorkload) Template() *corev1.PodTemplateSpec     { return &w.Spec.Template }
func (w DaemonSetWorkload) SetTemplate(t *corev1.PodTemplateSpec) { setTemplate(&w.Spec.Template, t) }
func (DaemonSetWorkload) TemplatePath() string                    { return "/spec/template" }
func (w DaemonSetWorkload) deepCopy() Workload                    { return DaemonSetWorkload{w.DeepCopy()} }

// PodWorkload is a Pod as a Workload (Emissary's chart has `barePod: true`). Its template is
// the Pod's own metadata and spec; only labels (istio-injector mode's), annotations and spec
// ever change.
type PodWorkload struct{ *corev1.Pod }

func (PodWorkload) Kind() string { return KindPod }
func (w PodWorkload) Template() *corev1.PodTemplateSpec {
	return &corev1.PodTemplateSpec{ObjectMeta: w.ObjectMeta, Spec: w.Spec}
}
func (w PodWorkload) SetTemplate(t *corev1.PodTemplateSpec) {
	w.Labels, w.Annotations, w.Spec = t.Labels, t.Annotations, t.Spec
}
func (PodWorkload) TemplatePath() string { return "" }
func (w PodWorkload) deepCopy() Workload { return PodWorkload{w.DeepCopy()} }

func setTemplate(dst, t *corev1.PodTemplateSpec) {
	if dst != t {
		*dst = *t
	}
}

// NewWorkload wraps obj (a *Deployment, *DaemonSet or *Pod) as a Workload; nil for any
// other type.
func NewWorkload(obj any) Workload {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return DeploymentWorkload{o}
	case *appsv1.DaemonSet:
		return DaemonSetWorkload{o}
	case *corev1.Pod:
		return PodWorkload{o}
	}
	return nil
}

// DecodeWorkload reads a workload of kind (KindDeployment, KindDaemonSet or KindPod) from
// JSON as the API server does: keys are case-sensitive. (encoding/json would also read
// "Spec" as spec, and a patch of /spec/... would then not apply to the object it was decoded
// from.) Fields this build's API types do not know are dropped from the result; the patch
// leaves them alone in the object.
func DecodeWorkload(kind string, raw []byte) (Workload, error) {
	var obj any
	switch kind {
	case KindDeployment:
		obj = &appsv1.Deployment{}
	case KindDaemonSet:
		obj = &appsv1.DaemonSet{}
	case KindPod:
		obj = &corev1.Pod{}
	default:
		return nil, fmt.Errorf("kind %q is not a workload the injector handles (%s, %s, %s)", kind, KindDeployment, KindDaemonSet, KindPod)
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, obj); err != nil {
		return nil, err
	}
	return NewWorkload(obj), nil
}
