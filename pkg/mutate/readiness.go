package mutate

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/watchlist"
)

// cacheFreshness says whether the namespace cache is current, for /readyz: whether the labels
// a Mapping admission reads are the API server's, give or take the delivery of the latest
// watch event.
//
// An informer's HasSynced stays true for ever once the first list is done, and an open watch
// does not prove the cache current either: after kube-apiserver restarts, the reflector's
// watch resumed from its last resourceVersion is answered 200 with a single ERROR event
// ("too old resource version", 410), and the reflector re-lists only after its backoff,
// which grows while the API server is down (seconds to a minute). Labels changed meanwhile
// are missing from the cache. So cacheFreshness sits between the reflector and its
// ListerWatcher and follows what the reflector receives:
//
//   - the cache becomes current when the reflector has a complete state: a list returned,
//     a streaming list's "initial-events-end" bookmark arrived, or, after the cache was
//     stale, a resumed watch delivered an event or bookmark (the API server accepted the
//     resourceVersion, so it replays every change since), and the cache has applied that
//     resourceVersion;
//   - it stops being current when the reflector starts a re-list, when the API server
//     refuses its resourceVersion (410 Expired/Gone, or too large), and when no watch has
//     been open for longer than grace (an unreachable API server). A watch that ends for
//     any other reason and is resumed within grace keeps it current: that is how the
//     reflector renews its watch every few minutes.
//
// It costs no API call and nothing per admission.
type cacheFreshness struct {
	grace time.Duration
	now   func() time.Time
	// applied is the resourceVersion the cache has applied; set when the informer is built.
	applied func() string

	mu        sync.Mutex
	open      int       // watches the reflector holds
	downSince time.Time // since when open is 0 (or when a list last completed)
	current   bool
	proven    string // current once applied has reached this resourceVersion
	stale     string // why the cache is not current
}

func newCacheFreshness(grace time.Duration, now func() time.Time) *cacheFreshness {
	return &cacheFreshness{grace: grace, now: now, downSince: now(), stale: "the namespace cache has not listed namespaces yet"}
}

// check is the readiness check: nil while the cache is current.
func (f *cacheFreshness) check() error {
	f.mu.Lock()
	open, down, current, stale, proven, applied := f.open, f.now().Sub(f.downSince), f.current, f.stale, f.proven, f.applied
	f.mu.Unlock()
	switch {
	case open == 0 && down > f.grace:
		return fmt.Errorf("namespace cache is stale: no watch on namespaces open for %s (API server unreachable?)", down.Round(time.Second))
	case !current:
		return fmt.Errorf("namespace cache is stale: %s", stale)
	case applied == nil:
		return fmt.Errorf("namespace cache is stale: it has no informer")
	}
	if rv := applied(); !atLeast(rv, proven) {
		return fmt.Errorf("namespace cache is catching up: it has applied resourceVersion %q, the API server sent %q", rv, proven)
	}
	return nil
}

// atLeast reports whether resourceVersion a is at or after b. Kubernetes' resourceVersions
// are comparable integers (KEP-5504, k8s.io/apimachinery's resourceversion); should a
// storage hand out others, an applied one is taken as enough rather than shut readiness
// for ever: the events seen already say the cache is current.
func atLeast(a, b string) bool {
	if b == "" {
		return true
	}
	c, err := resourceversion.CompareResourceVersion(a, b)
	if err != nil {
		return a != ""
	}
	return c >= 0
}

func (f *cacheFreshness) markStale(why string) {
	f.current, f.stale = false, why
}

func (f *cacheFreshness) markCurrent(rv string) {
	f.current, f.proven, f.stale = true, rv, ""
}

func (f *cacheFreshness) listStarted() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.markStale("the informer is re-listing namespaces; waiting for the list to complete")
}

func (f *cacheFreshness) listDone(list runtime.Object, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.refused(err)
		return
	}
	if m, ok := list.(metav1.ListInterface); ok {
		f.markCurrent(m.GetResourceVersion())
		if f.open == 0 {
			f.downSince = f.now()
		}
	}
}

// refused records an error answer to a list or watch.
func (f *cacheFreshness) refused(err error) {
	if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) || apierrors.HasStatusCause(err, metav1.CauseTypeResourceVersionTooLarge) {
		f.markStale(fmt.Sprintf("the API server refused the informer's resourceVersion (%v); waiting for it to re-list", err))
	}
}

// watchStarted records a watch the reflector opened: a streaming list (sendInitialEvents)
// or a watch resumed from its last resourceVersion.
func (f *cacheFreshness) watchStarted(streamingList bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// A streaming list is marked stale when requested (listStarted); a resumed watch after a
	// longer cut must be confirmed by the API server.
	if down := f.now().Sub(f.downSince); !streamingList && f.open == 0 && down > f.grace {
		f.markStale(fmt.Sprintf("the informer resumed its watch after %s without one; waiting for the API server to confirm it (an event or a bookmark)", down.Round(time.Second)))
	}
	f.open++
}

func (f *cacheFreshness) watchFailed(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refused(err)
}

func (f *cacheFreshness) watchEnded() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open--; f.open == 0 {
		f.downSince = f.now()
	}
}

// event records an event of watch w as the reflector is about to receive it.
func (f *cacheFreshness) event(w *observedWatch, ev watch.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ev.Type == watch.Error {
		f.refused(apierrors.FromObject(ev.Object))
		return
	}
	m, err := metaOf(ev.Object)
	if err != nil {
		return
	}
	if w.streamingList && !w.initialDone {
		// Until the "initial-events-end" bookmark the reflector gathers the list aside.
		if ev.Type == watch.Bookmark && m.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
			w.initialDone = true
			f.markCurrent(m.GetResourceVersion())
		}
		return
	}
	if !f.current {
		f.markCurrent(m.GetResourceVersion())
	}
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	if obj == nil {
		return nil, fmt.Errorf("no object")
	}
	if m, ok := obj.(metav1.Object); ok {
		return m, nil
	}
	return nil, fmt.Errorf("%T has no metadata", obj)
}

// newInformer is a cache.Options.NewInformer: the namespace informer's ListerWatcher goes
// through f, and f reads how far its cache has applied. Other informers are left alone.
func (f *cacheFreshness) newInformer(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
	if gvk := obj.GetObjectKind().GroupVersionKind(); gvk.Group != "" || gvk.Kind != "Namespace" {
		return toolscache.NewSharedIndexInformer(lw, obj, resync, indexers)
	}
	informer := toolscache.NewSharedIndexInformer(&observedListerWatcher{inner: lw, freshness: f}, obj, resync, indexers)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = func() string {
		// The indexer's resourceVersion is what admissions read (client-go's AtomicFIFO,
		// on by default); without it, the reflector's, which runs ahead by the event queue.
		if rv := informer.GetIndexer().LastStoreSyncResourceVersion(); rv != "" {
			return rv
		}
		return informer.LastSyncResourceVersion()
	}
	return informer
}

// observedListerWatcher passes the reflector's lists and watches through, telling
// freshness what they return.
type observedListerWatcher struct {
	inner     toolscache.ListerWatcher
	freshness *cacheFreshness
}

func (o *observedListerWatcher) List(opts metav1.ListOptions) (runtime.Object, error) {
	return o.ListWithContext(context.Background(), opts)
}

func (o *observedListerWatcher) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return o.WatchWithContext(context.Background(), opts)
}

func (o *observedListerWatcher) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	o.freshness.listStarted()
	list, err := toolscache.ToListerWatcherWithContext(o.inner).ListWithContext(ctx, opts)
	o.freshness.listDone(list, err)
	return list, err
}

func (o *observedListerWatcher) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	streamingList := opts.SendInitialEvents != nil && *opts.SendInitialEvents
	if streamingList {
		o.freshness.listStarted()
	}
	w, err := toolscache.ToListerWatcherWithContext(o.inner).WatchWithContext(ctx, opts)
	if err != nil {
		o.freshness.watchFailed(err)
		return nil, err
	}
	o.freshness.watchStarted(streamingList)
	return newObservedWatch(w, streamingList, o.freshness), nil
}

// IsWatchListSemanticsUnSupported keeps what the wrapped ListerWatcher says about streaming
// lists, which the reflector asks.
func (o *observedListerWatcher) IsWatchListSemanticsUnSupported() bool {
	return watchlist.DoesClientNotSupportWatchListSemantics(o.inner)
}

// observedWatch forwards a watch's events, showing each to freshness first.
type observedWatch struct {
	inner         watch.Interface
	out           chan watch.Event
	stop          chan struct{}
	stopOnce      sync.Once
	streamingList bool
	initialDone   bool // guarded by freshness.mu
}

func newObservedWatch(inner watch.Interface, streamingList bool, f *cacheFreshness) *observedWatch {
	w := &observedWatch{inner: inner, out: make(chan watch.Event), stop: make(chan struct{}), streamingList: streamingList}
	go func() {
		defer close(w.out)
		defer f.watchEnded()
		for {
			select {
			case ev, ok := <-inner.ResultChan():
				if !ok {
					return
				}
				f.event(w, ev)
				select {
				case w.out <- ev:
				case <-w.stop:
					return
				}
			case <-w.stop:
				return
			}
		}
	}()
	return w
}

func (w *observedWatch) ResultChan() <-chan watch.Event { return w.out }

func (w *observedWatch) Stop() {
	w.stopOnce.Do(func() {
		close(w.stop)
		w.inner.Stop()
	})
}
