// Package reviews holds the AdmissionReviews that the benchmarks in pkg/mutate and the load
// test (test/load) send: requests kube-apiserver really sent for the seed's objects applied
// with kubectl, recorded by `go run ./test/reviews/capture` into testdata/. They carry what
// every real request carries and a hand-made one would leave out (the defaults the API server
// filled in, managedFields, kubectl's last-applied-configuration annotation); the floor,
// decoding the review, pays for those bytes as the handler does.
package reviews

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// UID is the request UID of every recorded review; the webhook echoes it.
const UID = "0d2b4c8e-8d5a-4c1e-9f3b-2a6f1e7c9b10"

// root is the repository root, found from this file, so callers may run from anywhere.
func root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// The objects the reviews were recorded for.
var (
	// SeedFile is the seed's Emissary Deployment as an operator applies it.
	SeedFile = filepath.Join(root(), "test", "envtest", "testdata", "emissary-deployment.yaml")
	// MappingFile is the seed's quote-backend Mapping, in namespace default.
	MappingFile = filepath.Join(root(), "test", "envtest", "testdata", "quote-mapping.yaml")
)

func recorded(name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(root(), "test", "reviews", "testdata", name+".json"))
	if err != nil {
		return nil, fmt.Errorf("%w (record the reviews with `go run ./test/reviews/capture`)", err)
	}
	return b, nil
}

// Seed is the CREATE of the seed's Emissary Deployment (kubectl apply): it gets injected.
func Seed() ([]byte, error) { return recorded("seed") }

// Noop is the UPDATE of the stored, injected seed by a second apply (kubectl apply
// --server-side): the common update, answered without a patch.
func Noop() ([]byte, error) { return recorded("noop") }

// Large is the CREATE of the seed with 1,000 env vars and 200 volume mounts (Enlarge).
func Large() ([]byte, error) { return recorded("large") }

// Mapping is the CREATE of the seed's quote-backend Mapping in namespace default; with
// default meshed it gets tls: istio-upstream.
func Mapping() ([]byte, error) { return recorded("mapping") }

// MappingTo is Mapping with spec.service set to service (e.g. "quote.ns-0042", to make the
// webhook look up namespace ns-0042).
func MappingTo(service string) ([]byte, error) {
	body, err := Mapping()
	if err != nil {
		return nil, err
	}
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &ar); err != nil || ar.Request == nil {
		return nil, fmt.Errorf("recorded mapping review: %v", err)
	}
	var obj map[string]interface{}
	if err := json.Unmarshal(ar.Request.Object.Raw, &obj); err != nil {
		return nil, err
	}
	spec, ok := obj["spec"].(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("recorded mapping has no spec")
	}
	spec["service"] = service
	if ar.Request.Object.Raw, err = json.Marshal(obj); err != nil {
		return nil, err
	}
	return json.Marshal(&ar)
}

// Enlarge adds 1,000 env vars to d's first container and 200 volumes mounted into it.
func Enlarge(d *appsv1.Deployment) {
	c := &d.Spec.Template.Spec.Containers[0]
	for i := range 1000 {
		c.Env = append(c.Env, corev1.EnvVar{Name: fmt.Sprintf("SETTING_%04d", i), Value: fmt.Sprintf("value-%04d", i)})
	}
	for i := range 200 {
		name := fmt.Sprintf("config-%03d", i)
		d.Spec.Template.Spec.Volumes = append(d.Spec.Template.Spec.Volumes, corev1.Volume{Name: name,
			VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: name, MountPath: "/etc/config/" + name, ReadOnly: true})
	}
}

// Response decodes the webhook's answer to one of these reviews.
func Response(body []byte) (*admissionv1.AdmissionResponse, error) {
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("undecodable response %.200q: %w", body, err)
	}
	if out.Response == nil {
		return nil, fmt.Errorf("response without a response: %.200q", body)
	}
	return out.Response, nil
}

// Check says whether resp is the answer the review wants: allowed, with a patch or without.
func Check(resp *admissionv1.AdmissionResponse, wantPatch bool) error {
	switch {
	case resp.UID != UID:
		return fmt.Errorf("response UID %q, want %q", resp.UID, UID)
	case !resp.Allowed:
		return fmt.Errorf("denied: %+v", resp.Result)
	case wantPatch && len(resp.Patch) == 0:
		return fmt.Errorf("no patch: %+v", resp.Result)
	case !wantPatch && len(resp.Patch) != 0:
		return fmt.Errorf("unexpected patch %s", resp.Patch)
	}
	return nil
}
