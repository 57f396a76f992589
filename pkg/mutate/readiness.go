package mutate

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// watchHealth says whether the namespace cache is being kept current, for /readyz.
//
// An informer's HasSynced stays true for ever once the first LIST is done, and its watch
// error handler is not called when the API server goes away: the reflector retries a
// refused watch quietly and resumes from the last resource version when it can. What does
// tell is whether a watch is open. So watchHealth sits in the manager's HTTP transport and
// counts the namespace WATCH responses that are streaming (status 200, body not yet ended
// or closed). The cache is healthy while one is open; when none has been open for longer
// than grace (the reflector reopens a watch that the server ended normally within
// milliseconds, so grace only absorbs that), readiness fails, and it passes again as soon as
// the reflector has a watch again, which it opens only after re-listing or resuming, i.e.
// with the cache caught up. It costs nothing per admission and makes no API call.
type watchHealth struct {
	grace     time.Duration
	now       func() time.Time
	open      atomic.Int64
	downSince atomic.Int64 // unix nanoseconds; when open last dropped to zero (or creation)
}

func newWatchHealth(grace time.Duration, now func() time.Time) *watchHealth {
	w := &watchHealth{grace: grace, now: now}
	w.downSince.Store(now().UnixNano())
	return w
}

// check is the readiness check: nil while a namespace watch is open (or was, within grace).
func (w *watchHealth) check() error {
	if w.open.Load() > 0 {
		return nil
	}
	down := w.now().Sub(time.Unix(0, w.downSince.Load()))
	if down <= w.grace {
		return nil
	}
	return fmt.Errorf("namespace cache is stale: no watch on namespaces open for %s (API server unreachable?)", down.Round(time.Second))
}

// wrap is a rest.Config transport wrapper.
func (w *watchHealth) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		if !isNamespaceWatch(req) {
			return rt.RoundTrip(req)
		}
		resp, err := rt.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			return resp, err
		}
		w.open.Add(1)
		resp.Body = &watchBody{ReadCloser: resp.Body, done: func() {
			if w.open.Add(-1) == 0 {
				w.downSince.Store(w.now().UnixNano())
			}
		}}
		return resp, nil
	})
}

// isNamespaceWatch: GET .../api/v1/namespaces?watch=true (a prefix before /api is allowed,
// for API servers behind a path-routing proxy).
func isNamespaceWatch(req *http.Request) bool {
	if req.Method != http.MethodGet || !strings.HasSuffix(req.URL.Path, "/api/v1/namespaces") {
		return false
	}
	v := req.URL.Query().Get("watch")
	return v == "true" || v == "1"
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// watchBody calls done once, when the stream ends (a read error, EOF included) or is closed.
type watchBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *watchBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(b.done)
	}
	return n, err
}

func (b *watchBody) Close() error {
	b.once.Do(b.done)
	return b.ReadCloser.Close()
}
