package ha

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Probe is a readiness probe's settings, as in the chart's Deployment.
type Probe struct {
	Period           time.Duration
	Timeout          time.Duration
	FailureThreshold int
}

// Endpoints keeps the webhook Service's EndpointSlice as the kubelet and the EndpointSlice
// controller would: each replica is probed on /readyz every Probe.Period (ready after one
// success, unready after FailureThreshold consecutive failures), the slice lists every
// replica with its readiness, and a replica leaves it when its pod is gone (Remove). kube-apiserver sends reviews only to ready endpoints.
type Endpoints struct {
	Client          client.Client
	Namespace, Name string // the Service
	PortName        string
	Probe           Probe
	httpClient      *http.Client
	mu              sync.Mutex
	replicas        []*probed
	events          []Event
	writeErr        error
	writing         sync.Mutex
}

type probed struct {
	replica *Replica
	ready   bool
	stop    chan struct{}
}

// Event is a change of a replica's endpoint, as written to the API server.
type Event struct {
	At      time.Time
	Replica string
	Ready   bool
	Removed bool
}

// Add starts probing r; its endpoint is written unready at once, as for a new pod.
func (e *Endpoints) Add(ctx context.Context, r *Replica) error {
	e.mu.Lock()
	if e.httpClient == nil {
		e.httpClient = &http.Client{Timeout: e.Probe.Timeout}
	}
	p := &probed{replica: r, stop: make(chan struct{})}
	e.replicas = append(e.replicas, p)
	e.mu.Unlock()
	if err := e.write(ctx, Event{At: time.Now(), Replica: r.Name}); err != nil {
		return err
	}
	go e.probe(ctx, p)
	return nil
}

// probe is the kubelet's prober for one container, until the process exits.
func (e *Endpoints) probe(ctx context.Context, p *probed) {
	failures := 0
	tick := time.NewTicker(e.Probe.Period)
	defer tick.Stop()
	for {
		ok := e.get(ctx, p.replica.HealthURL)
		e.mu.Lock()
		changed := false
		if ok {
			failures = 0
			changed, p.ready = !p.ready, true
		} else if failures++; failures >= e.Probe.FailureThreshold && p.ready {
			changed, p.ready = true, false
		}
		ready := p.ready
		e.mu.Unlock()
		if changed {
			e.recordErr(e.write(ctx, Event{At: time.Now(), Replica: p.replica.Name, Ready: ready}))
		}
		select {
		case <-ctx.Done():
			return
		case <-p.stop:
			return
		case <-tick.C:
		}
	}
}

// Remove takes replica name out of the slice, as the EndpointSlice controller does when its
// pod is gone, and stops probing it.
func (e *Endpoints) Remove(ctx context.Context, name string) error {
	e.mu.Lock()
	for i, p := range e.replicas {
		if p.replica.Name == name {
			close(p.stop)
			e.replicas = append(e.replicas[:i], e.replicas[i+1:]...)
			break
		}
	}
	e.mu.Unlock()
	return e.write(ctx, Event{At: time.Now(), Replica: name, Removed: true})
}

// Unready is when replica name's endpoint was last written unready (zero if never).
func (e *Endpoints) Unready(name string) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.events) - 1; i >= 0; i-- {
		if ev := e.events[i]; ev.Replica == name && !ev.Ready && !ev.Removed {
			return ev.At
		}
	}
	return time.Time{}
}

func (e *Endpoints) get(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := e.httpClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

func (e *Endpoints) recordErr(err error) {
	if err == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.writeErr == nil {
		e.writeErr = err
	}
}

// Err is the first failed write of the EndpointSlice.
func (e *Endpoints) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.writeErr
}

// Events are the endpoint changes written so far.
func (e *Endpoints) Events() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Event(nil), e.events...)
}

// Ready reports whether replica name's endpoint is written ready.
func (e *Endpoints) Ready(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.replicas {
		if p.replica.Name == name {
			return p.ready
		}
	}
	return false
}

// WaitReady waits until replica name's endpoint is written ready.
func (e *Endpoints) WaitReady(name string, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if e.Ready(name) {
			return nil
		}
	}
	return fmt.Errorf("replica %s not ready in the endpoints after %s", name, timeout)
}

// write puts the current endpoints into the slice (one writer at a time) and records ev
// once written.
func (e *Endpoints) write(ctx context.Context, ev Event) error {
	e.writing.Lock()
	defer e.writing.Unlock()
	e.mu.Lock()
	var endpoints []discoveryv1.Endpoint
	for _, p := range e.replicas {
		endpoints = append(endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.replica.IP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(p.ready), Serving: ptr.To(p.ready)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: e.Namespace, Name: p.replica.Name},
		})
	}
	e.mu.Unlock()
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: e.Name + "-drill", Namespace: e.Namespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: e.Name,
			discoveryv1.LabelManagedBy:   "ha-drill.emissary-istio.io",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   endpoints,
		Ports: []discoveryv1.EndpointPort{{
			Name: ptr.To(e.PortName), Port: ptr.To(int32(WebhookPort)), Protocol: ptr.To(corev1.ProtocolTCP),
		}},
	}
	for {
		existing := &discoveryv1.EndpointSlice{}
		err := e.Client.Get(ctx, client.ObjectKeyFromObject(slice), existing)
		switch {
		case apierrors.IsNotFound(err):
			err = e.Client.Create(ctx, slice)
		case err == nil:
			slice.ResourceVersion = existing.ResourceVersion
			err = e.Client.Update(ctx, slice)
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("writing the EndpointSlice: %w", err)
		}
		e.mu.Lock()
		e.events = append(e.events, ev)
		e.mu.Unlock()
		return nil
	}
}
