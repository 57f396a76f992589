package mutate

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestWatchHealth: readiness follows the namespace watch responses that pass through the
// manager's transport: healthy while one streams, unhealthy once none has for longer than the
// grace period, healthy again when a new one opens. Other requests do not count. (The drill
// TestDrillAPIServerRestart shows the same on a real kube-apiserver.)
func TestWatchHealth(t *testing.T) {
	const grace = 3 * time.Second
	clock := time.Unix(1000, 0)
	w := newWatchHealth(grace, func() time.Time { return clock })
	var bodies []*io.PipeWriter
	rt := w.wrap(roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		if strings.Contains(req.URL.RawQuery, "refused") {
			return nil, errors.New("connection refused")
		}
		status := http.StatusOK
		if strings.Contains(req.URL.RawQuery, "forbidden") {
			status = http.StatusForbidden
		}
		r, pw := io.Pipe()
		bodies = append(bodies, pw)
		return &http.Response{StatusCode: status, Body: r}, nil
	}))
	get := func(url string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		resp, _ := rt.RoundTrip(req)
		return resp
	}
	unhealthyAfterGrace := func(want bool) {
		t.Helper()
		clock = clock.Add(grace + time.Second)
		if err := w.check(); (err != nil) != want {
			t.Fatalf("check() = %v, want unhealthy %v", err, want)
		}
	}

	if err := w.check(); err != nil {
		t.Fatalf("unhealthy within the grace period after creation: %v", err)
	}
	unhealthyAfterGrace(true) // no watch ever opened

	for _, url := range []string{
		"https://api/api/v1/namespaces",                        // a LIST
		"https://api/api/v1/namespaces/default",                // a GET
		"https://api/api/v1/pods?watch=true",                   // another resource's watch
		"https://api/api/v1/namespaces?watch=true&x=forbidden", // a watch the server refused
	} {
		get(url)
	}
	if resp := get("https://api/api/v1/namespaces?watch=true&x=refused"); resp != nil {
		t.Fatal("a failed round trip returned a response")
	}
	unhealthyAfterGrace(true)

	// A watch opens (behind a path-routing proxy, even): healthy for as long as it streams.
	watch := get("https://proxy/k8s/clusters/c-1/api/v1/namespaces?allowWatchBookmarks=true&watch=true")
	unhealthyAfterGrace(false)
	second := get("https://api/api/v1/namespaces?watch=1")
	if err := watch.Body.Close(); err != nil {
		t.Fatal(err)
	}
	unhealthyAfterGrace(false) // the other one still streams

	// The stream ends from the server's side (a read error), then the client closes it:
	// counted once.
	_ = bodies[len(bodies)-1].CloseWithError(io.ErrUnexpectedEOF)
	if _, err := io.ReadAll(second.Body); err == nil {
		t.Fatal("want the read error")
	}
	_ = second.Body.Close()
	if n := w.open.Load(); n != 0 {
		t.Fatalf("%d watches counted open, want 0", n)
	}
	if err := w.check(); err != nil {
		t.Fatalf("unhealthy at once; the grace period absorbs a normal re-watch: %v", err)
	}
	unhealthyAfterGrace(true)
	if err := w.check(); err == nil || !strings.Contains(err.Error(), "no watch on namespaces") {
		t.Fatalf("check() = %v, want it to say no watch is open", err)
	}

	// The reflector watches again: healthy at once.
	get("https://api/api/v1/namespaces?watch=true")
	if err := w.check(); err != nil {
		t.Fatal(err)
	}
}
