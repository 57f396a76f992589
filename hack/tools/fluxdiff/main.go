// Command fluxdiff runs Flux's own drift detection (github.com/fluxcd/pkg/ssa, the library
// kustomize-controller reconciles with) on manifests against a real API server, so the tests can
// show what Flux reports for the objects the webhook mutates.
//
//	fluxdiff -kubeconfig FILE [-apply] MANIFEST...
//
// Without -apply it runs ResourceManager.Diff, what `flux diff kustomization` and the
// controller's drift check run: a server-side dry-run apply with Flux's field manager (so
// through the mutating webhooks), compared with the stored object by Flux's own code. With
// -apply it runs ResourceManager.Apply with kustomize-controller's options, which applies only
// when that same check finds drift. It writes one JSON verdict per object on stdout:
//
//	[{"object": "Mapping/ns/name", "action": "unchanged", "inSync": true, "diff": [...]}]
//
// and exits 0 whenever it could ask the API server: out of sync is a verdict, not a failure.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/jsondiff"
	ssautils "github.com/fluxcd/pkg/ssa/utils"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The field manager and label group of Flux's kustomize-controller.
var owner = ssa.Owner{Field: "kustomize-controller", Group: "kustomize.toolkit.fluxcd.io"}

type verdict struct {
	Object string `json:"object"`
	// Action is ssa's ChangeSetEntry action: unchanged, configured, created, skipped.
	Action string `json:"action"`
	InSync bool   `json:"inSync"`
	// Diff is the JSON patch from the stored object to what Flux would make it (Diff mode).
	Diff json.RawMessage `json:"diff,omitempty"`
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster (required)")
	apply := flag.Bool("apply", false, "apply as kustomize-controller does, instead of only diffing")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: fluxdiff -kubeconfig FILE [-apply] MANIFEST...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *kubeconfig == "" || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*kubeconfig, *apply, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "fluxdiff:", err)
		os.Exit(1)
	}
}

func run(kubeconfig string, apply bool, files []string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return err
	}
	var objects []*unstructured.Unstructured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		objs, err := ssautils.ReadObjects(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		objects = append(objects, objs...)
	}
	// Flux labels what it applies with its Kustomization's name; the tests call it "edge".
	manager := ssa.NewResourceManager(c, nil, owner)
	manager.SetOwnerLabels(objects, "edge", "flux-system")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	verdicts := make([]verdict, 0, len(objects))
	for _, obj := range objects {
		var v verdict
		if apply {
			v, err = applyOne(ctx, manager, obj)
		} else {
			v, err = diffOne(ctx, manager, obj)
		}
		if err != nil {
			return err
		}
		verdicts = append(verdicts, v)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(verdicts)
}

func diffOne(ctx context.Context, m *ssa.ResourceManager, obj *unstructured.Unstructured) (verdict, error) {
	entry, live, merged, err := m.Diff(ctx, obj, ssa.DefaultDiffOptions())
	if err != nil {
		return verdict{}, err
	}
	v := verdict{Object: entry.Subject, Action: string(entry.Action), InSync: entry.Action == ssa.UnchangedAction}
	if live != nil && merged != nil {
		patch, err := jsondiff.DiffUnstructured(live, merged)
		if err != nil {
			return verdict{}, err
		}
		if v.Diff, err = json.Marshal(patch); err != nil {
			return verdict{}, err
		}
	}
	return v, nil
}

// applyOne applies as kustomize-controller does: its cleanup of what kubectl left behind
// (the last-applied annotation; the field managers named kubectl*, matched by prefix, and
// before-first-apply; its own pre-SSA manager), then ssa's Apply, which sends the apply only
// when the dry-run shows drift.
func applyOne(ctx context.Context, m *ssa.ResourceManager, obj *unstructured.Unstructured) (verdict, error) {
	opts := ssa.DefaultApplyOptions()
	opts.Cleanup = ssa.ApplyCleanupOptions{
		Annotations: []string{corev1.LastAppliedConfigAnnotation},
		FieldManagers: []ssa.FieldManager{
			{Name: "kubectl", OperationType: metav1.ManagedFieldsOperationApply},
			{Name: "kubectl", OperationType: metav1.ManagedFieldsOperationUpdate},
			{Name: "before-first-apply", OperationType: metav1.ManagedFieldsOperationUpdate},
			{Name: owner.Field, OperationType: metav1.ManagedFieldsOperationUpdate},
		},
	}
	entry, err := m.Apply(ctx, obj, opts)
	if err != nil {
		return verdict{}, err
	}
	return verdict{Object: entry.Subject, Action: string(entry.Action), InSync: entry.Action == ssa.UnchangedAction}, nil
}
