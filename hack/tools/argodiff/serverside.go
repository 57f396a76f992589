package main

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"

	"github.com/argoproj/gitops-engine/pkg/diff"
	jsonutil "github.com/argoproj/gitops-engine/pkg/utils/json"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
)

// argoManager is the field manager of Argo CD's application controller.
const argoManager = "argocd-controller"

// serverSideDiff is Argo CD's server-side diff with the mutation webhook included (compare
// option ServerSideDiff=true,IncludeMutationWebhook=true). gitops-engine added it after v0.7.3
// (serverSideDiff in pkg/diff, "Implement Server-Side Diffs", 2023), and the module proxy serves
// no later version that builds, so these are its steps on v0.7.3's exported parts:
//
//  1. the predicted live object is the answer to a server-side apply of the manifest in
//     dry-run mode with Argo CD's field manager and --force-conflicts, as its
//     K8sServerSideDryRunner sends it: through the mutating webhooks;
//  2. with IncludeMutationWebhook=true the webhook's changes stay in it (otherwise Argo CD
//     reverts the fields its manager does not own to their live values);
//  3. both sides are remarshalled and normalized as diff.Diff does, managedFields dropped, and
//     compared byte for byte.
func serverSideDiff(ctx context.Context, res dynamic.ResourceInterface, config, live *unstructured.Unstructured, opts ...diff.Option) (*diff.DiffResult, error) {
	body, err := json.Marshal(config.Object)
	if err != nil {
		return nil, err
	}
	force := true
	predicted, err := res.Patch(ctx, config.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{
		DryRun:       []string{metav1.DryRunAll},
		FieldManager: argoManager,
		Force:        &force,
	})
	if err != nil {
		return nil, err
	}
	predictedBytes, err := normalizedJSON(predicted, opts)
	if err != nil {
		return nil, err
	}
	liveBytes, err := normalizedJSON(live, opts)
	if err != nil {
		return nil, err
	}
	return &diff.DiffResult{
		Modified:       string(predictedBytes) != string(liveBytes),
		NormalizedLive: liveBytes,
		PredictedLive:  predictedBytes,
	}, nil
}

func normalizedJSON(obj *unstructured.Unstructured, opts []diff.Option) ([]byte, error) {
	obj, err := remarshal(obj)
	if err != nil {
		return nil, err
	}
	diff.Normalize(obj, opts...)
	unstructured.RemoveNestedField(obj.Object, "metadata", "managedFields")
	return json.Marshal(obj)
}

// remarshal is what gitops-engine's (unexported) remarshal does to both sides before a diff:
// a JSON round trip, and for a built-in kind a decode into its Go type, so that both sides
// carry the same fields in the same form.
func remarshal(obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	data, err := json.Marshal(obj.Object)
	if err != nil {
		return nil, err
	}
	plain := &unstructured.Unstructured{}
	if err := json.Unmarshal(data, &plain.Object); err != nil {
		return nil, err
	}
	item, err := scheme.Scheme.New(obj.GroupVersionKind())
	if err != nil {
		return plain, nil // not a built-in kind (a Mapping)
	}
	typed := reflect.New(reflect.TypeOf(item).Elem()).Interface()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(typed); err != nil {
		return plain, nil
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(typed)
	if err != nil {
		return plain, nil
	}
	return &unstructured.Unstructured{Object: jsonutil.RemoveMapFields(plain.Object, m)}, nil
}
