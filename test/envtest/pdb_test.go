package envtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestPodDisruptionBudgetDrains: the chart's PodDisruptionBudget never blocks a drain. With
// one replica, the fewest the schema allows, the real disruption controller (in
// kube-controller-manager, with the deployment and replicaset controllers making the pod
// from the chart's Deployment) lets the eviction API that `kubectl drain` calls evict it. The
// control: the budget the chart had before, minAvailable 1, refuses the eviction, so the check
// can fail.
func TestPodDisruptionBudgetDrains(t *testing.T) {
	e, err := Start(Options{NoWebhook: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	kcm, err := e.StartControllerManager("deployment-controller", "replicaset-controller", "disruption-controller")
	if err != nil {
		t.Fatal(err)
	}
	defer kcm.Stop()
	ctx := context.Background()
	if _, _, err := e.Kubectl(nil, "create", "namespace", releaseNamespace); err != nil {
		t.Fatal(err)
	}
	chart := newHelm(t, nil).template("--set", "replicaCount=1")
	workload := chart.only(t, func(u *unstructured.Unstructured) bool {
		return u.GetKind() == "Deployment" || u.GetKind() == "PodDisruptionBudget"
	})
	if _, _, err := e.Kubectl(workload, "apply", "-n", releaseNamespace, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(e.Config)

	evict := func(budget string) error {
		t.Helper()
		pod := readyPod(t, e, kcm)
		// The eviction API refuses while the controller has not seen the budget's generation.
		eventually(t, 30*time.Second, func() (string, bool) {
			pdb, err := cs.PolicyV1().PodDisruptionBudgets(releaseNamespace).Get(ctx, releaseName, metav1.GetOptions{})
			if err != nil {
				return err.Error(), false
			}
			return fmt.Sprintf("%s: status %+v", budget, pdb.Status),
				pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.CurrentHealthy == 1 && pdb.Status.ExpectedPods == 1
		})
		return cs.PolicyV1().Evictions(releaseNamespace).Evict(ctx, &policyv1.Eviction{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: releaseNamespace}})
	}

	if err := evict("maxUnavailable 1"); err != nil {
		t.Fatalf("the chart's PodDisruptionBudget blocks draining the only replica: %v", err)
	}
	// The disruption controller writes the PDB's status meanwhile: retry on a conflict.
	one := intstr.FromInt32(1)
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pdb := &policyv1.PodDisruptionBudget{}
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: releaseName}, pdb); err != nil {
			return err
		}
		pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable = nil, &one
		return e.Client.Update(ctx, pdb)
	}); err != nil {
		t.Fatal(err)
	}
	if err := evict("minAvailable 1"); !apierrors.IsTooManyRequests(err) {
		t.Fatalf("the control, minAvailable 1 with one replica: eviction %v, want it refused (429)", err)
	}
}

// readyPod waits for the Deployment's one live pod and marks it Running and Ready, as the
// kubelet would once its containers pass their readiness probes (no kubelet runs here).
func readyPod(t *testing.T, e *Env, kcm *ControllerManager) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	var pod corev1.Pod
	eventually(t, 30*time.Second, func() (string, bool) {
		if err := kcm.Exited(); err != nil {
			t.Fatal(err)
		}
		var pods corev1.PodList
		if err := e.Client.List(ctx, &pods, client.InNamespace(releaseNamespace)); err != nil {
			return err.Error(), false
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				pod = p
				return "", true
			}
		}
		return fmt.Sprintf("no live pod among %d", len(pods.Items)), false
	})
	pod.Status.Phase = corev1.PodRunning
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
	if err := e.Client.Status().Update(ctx, &pod); err != nil {
		t.Fatal(err)
	}
	return &pod
}
