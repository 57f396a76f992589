package mutate

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// fakeNamespaceSource plays the API server for cacheFreshness: each watch is a watch.FakeWatcher
// the test drives, each list answers list.
type fakeNamespaceSource struct {
	watches  []*watch.FakeWatcher
	watchErr error
	list     func() (runtime.Object, error)
}

func (s *fakeNamespaceSource) listerWatcher() toolscache.ListerWatcher {
	return &toolscache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) { return s.list() },
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
			if s.watchErr != nil {
				return nil, s.watchErr
			}
			w := watch.NewFake()
			s.watches = append(s.watches, w)
			return w, nil
		},
	}
}

func nsMeta(rv string, annotations map[string]string) *metav1.PartialObjectMetadata {
	m := NamespaceObject()
	m.Name, m.ResourceVersion, m.Annotations = "ns", rv, annotations
	return m
}

// TestCacheFreshness: readiness follows what the namespace informer's reflector receives: it
// is current after a complete list (streaming or not) once the cache has applied it, stays
// current across a watch renewal within the grace period, and is stale at once when the API
// server refuses the resourceVersion (kube-apiserver restarted: 410 "too old resource
// version"), while re-listing, and after a longer cut until the resumed watch is confirmed.
// (TestDrillAPIServerRestart shows the same on a real kube-apiserver.)
func TestCacheFreshness(t *testing.T) {
	const grace = 3 * time.Second
	clock := time.Unix(1000, 0)
	f := newCacheFreshness(grace, func() time.Time { return clock })
	applied := ""
	f.applied = func() string { return applied }
	src := &fakeNamespaceSource{}
	lw := (&observedListerWatcher{inner: src.listerWatcher(), freshness: f})

	expect := func(step, wantErr string) {
		t.Helper()
		err := f.check()
		switch {
		case wantErr == "" && err != nil:
			t.Fatalf("%s: not ready: %v", step, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Fatalf("%s: check() = %v, want an error containing %q", step, err, wantErr)
		}
	}
	var current watch.Interface
	open := func(opts metav1.ListOptions) {
		t.Helper()
		w, err := lw.WatchWithContext(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		current = w
	}
	// send delivers ev on the newest watch; it returns once the reflector's side has it.
	send := func(typ watch.EventType, obj runtime.Object) {
		t.Helper()
		go src.watches[len(src.watches)-1].Action(typ, obj)
		select {
		case <-current.ResultChan():
		case <-time.After(10 * time.Second):
			t.Fatal("event not forwarded")
		}
	}
	end := func() {
		t.Helper()
		src.watches[len(src.watches)-1].Stop()
		for range current.ResultChan() {
		}
	}
	streaming := metav1.ListOptions{SendInitialEvents: ptr.To(true), ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan}
	resume := func(rv string) metav1.ListOptions { return metav1.ListOptions{ResourceVersion: rv} }
	endOfList := map[string]string{metav1.InitialEventsAnnotationKey: "true"}

	expect("new", "has not listed namespaces yet")

	// The informer starts with a streaming list: current at its end bookmark, once applied.
	open(streaming)
	expect("streaming list started", "re-listing")
	send(watch.Added, nsMeta("7", nil))
	expect("initial events", "re-listing")
	send(watch.Bookmark, nsMeta("10", endOfList))
	expect("end bookmark received, not applied", `catching up: it has applied resourceVersion "", the API server sent "10"`)
	applied = "10"
	expect("end bookmark applied", "")
	send(watch.Modified, nsMeta("11", nil))
	expect("an event the cache has not applied yet", "") // ordinary propagation, not staleness
	applied = "11"

	// The API server ends the watch (its timeout); the reflector resumes within the grace period.
	end()
	expect("between two watches", "")
	clock = clock.Add(grace / 2)
	open(resume("11"))
	expect("watch renewed", "")

	// kube-apiserver restarted: the resumed watch is answered with 410. Stale at once, not
	// after a grace period, and while the reflector re-lists (a plain list this time).
	send(watch.Error, &apierrors.NewResourceExpired("too old resource version: 11 (15)").ErrStatus)
	expect("410 on the watch", "too old resource version: 11 (15)")
	end()
	src.list = func() (runtime.Object, error) {
		expect("during the re-list", "re-listing")
		l := &metav1.PartialObjectMetadataList{}
		l.ResourceVersion = "20"
		return l, nil
	}
	if _, err := lw.ListWithContext(context.Background(), metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("listed, not applied", "catching up")
	applied = "20"
	expect("listed and applied", "")
	open(resume("20"))
	expect("watching from the list", "")

	// A cut longer than the grace period: stale, and still stale when the watch is resumed,
	// until the API server confirms the resourceVersion with an event or a bookmark. An error
	// that is no refusal (the stream broke) confirms nothing.
	end()
	clock = clock.Add(grace + time.Second)
	expect("cut", "no watch on namespaces open for 4s")
	open(resume("20"))
	expect("resumed after the cut", "waiting for the API server to confirm it")
	send(watch.Error, &apierrors.NewInternalError(context.Canceled).ErrStatus)
	expect("internal error", "waiting for the API server to confirm it")
	send(watch.Bookmark, nsMeta("30", nil))
	expect("confirmed, not applied", "catching up")
	applied = "30"
	expect("confirmed and applied", "")

	// The API server refuses a watch request outright: 410 Expired, 410 Gone (servers before
	// 1.18), or a resourceVersion newer than it knows.
	end()
	for _, refusal := range []*apierrors.StatusError{
		apierrors.NewResourceExpired("too old resource version: 30 (40)"),
		{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: 410, Reason: metav1.StatusReasonGone, Message: "too old"}},
		{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: 504, Reason: metav1.StatusReasonTimeout, Message: "Too large resource version",
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: metav1.CauseTypeResourceVersionTooLarge}}}}},
	} {
		f.markCurrent("30")
		expect("before the refusal", "")
		src.watchErr = refusal
		if _, err := lw.WatchWithContext(context.Background(), resume("30")); err == nil {
			t.Fatal("want the watch error")
		}
		expect(string(refusal.ErrStatus.Reason), "refused the informer's resourceVersion")
	}
}

// TestCacheFreshnessObservesOnlyNamespaces: the cache.Options.NewInformer hook wraps the
// namespace informer and leaves any other alone.
func TestCacheFreshnessObservesOnlyNamespaces(t *testing.T) {
	f := newCacheFreshness(time.Second, time.Now)
	pods := &metav1.PartialObjectMetadata{}
	pods.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "Pod"})
	f.newInformer(&toolscache.ListWatch{}, pods, 0, toolscache.Indexers{})
	if f.applied != nil {
		t.Fatal("a Pod informer was taken for the namespace cache")
	}
	informer := f.newInformer(&toolscache.ListWatch{}, NamespaceObject(), 0, toolscache.Indexers{})
	if f.applied == nil {
		t.Fatal("the namespace informer is not observed")
	}
	if err := informer.GetIndexer().Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a", ResourceVersion: "5"}}); err != nil {
		t.Fatal(err)
	}
	if got := f.applied(); got != "5" {
		t.Fatalf("applied() = %q, want the indexer's resourceVersion 5", got)
	}
}
