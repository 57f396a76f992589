package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/mutate"
	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
	"github.com/emissary-istio/emissary-istio-webhook/test/reviews"
)

// ScaleResult is Mapping admission latency with few and with many namespaces in the
// webhook's cache, and its memory at the end.
type ScaleResult struct {
	Points []ScalePoint `json:"points"`
	// LatencyRatio is the webhook's p50 at the largest point over that at the smallest;
	// NormalizedRatio divides each by the floor's p50 measured in the same rounds.
	LatencyRatio    float64 `json:"latencyRatio"`
	NormalizedRatio float64 `json:"normalizedRatio"`
	RSS             RSS     `json:"rss"` // the webhook's, after the largest point
}

// ScalePoint is one cache size.
type ScalePoint struct {
	Namespaces   int     `json:"namespaces"`
	WebhookP50ms float64 `json:"webhookP50ms"` // median over rounds of each round's p50
	WebhookP99ms float64 `json:"webhookP99ms"`
	FloorP50ms   float64 `json:"floorP50ms"`
	RSS          RSS     `json:"rss"`
}

func scalePhase(o options, env *envtest.Env, tlsConfig *tls.Config, hook, floor *server) (*ScaleResult, error) {
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 1e6, 1e6
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, err
	}
	res := &ScaleResult{}
	for _, target := range []int{100, o.namespaces} {
		last, err := fillNamespaces(c, target)
		if err != nil {
			return nil, err
		}
		// The review asks about the newest namespace; the cache has every namespace once it
		// knows that one (a watch delivers in order).
		body, err := reviews.MappingTo("quote." + last)
		if err != nil {
			return nil, err
		}
		w := workload{name: "mapping to " + last, path: mutate.MappingPath, body: body, wantPatch: true}
		if err := waitDefaulted(tlsConfig, hook, w); err != nil {
			return nil, err
		}
		p := ScalePoint{Namespaces: target}
		var hp50, hp99, fp50 []float64
		for i := range o.scaleRounds {
			order := []*server{hook, floor}
			if i%2 == 1 {
				order = []*server{floor, hook}
			}
			for _, s := range order {
				r := drive(tlsConfig, s, w, 1, 2*time.Second, o.requests, s == hook)
				if r.Errors > 0 {
					return nil, fmt.Errorf("%s at %d namespaces: %d errors, first: %s", s.name, target, r.Errors, r.FirstError)
				}
				if s == hook {
					hp50, hp99 = append(hp50, r.P50ms), append(hp99, r.P99ms)
				} else {
					fp50 = append(fp50, r.P50ms)
				}
			}
		}
		p.WebhookP50ms, p.WebhookP99ms, p.FloorP50ms = median(hp50), median(hp99), median(fp50)
		if p.RSS, err = readRSS(hook.cmd.Process.Pid); err != nil {
			return nil, err
		}
		fmt.Printf("   %5d namespaces: webhook p50 %.3fms p99 %.3fms, floor p50 %.3fms; webhook RSS %.1f MiB (peak %.1f MiB)\n",
			target, p.WebhookP50ms, p.WebhookP99ms, p.FloorP50ms, mib(p.RSS.CurrentKiB), mib(p.RSS.PeakKiB))
		res.Points = append(res.Points, p)
	}
	first, last := res.Points[0], res.Points[len(res.Points)-1]
	res.LatencyRatio = last.WebhookP50ms / first.WebhookP50ms
	res.NormalizedRatio = (last.WebhookP50ms / last.FloorP50ms) / (first.WebhookP50ms / first.FloorP50ms)
	res.RSS = last.RSS
	return res, nil
}

// fillNamespaces creates namespaces until the cluster has n, and returns the newest one's
// name. Every tenth is meshed, and so is the newest.
func fillNamespaces(c client.Client, n int) (string, error) {
	ctx := context.Background()
	var list corev1.NamespaceList
	if err := c.List(ctx, &list); err != nil {
		return "", err
	}
	have := len(list.Items)
	if have >= n {
		return "", fmt.Errorf("already %d namespaces, want to grow to %d", have, n)
	}
	step(fmt.Sprintf("creating namespaces %d to %d", have+1, n))
	name := func(i int) string { return fmt.Sprintf("scale-%05d", i) }
	var next atomic.Int64
	next.Store(int64(have))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > n-1 { // the newest one is created last, below
					return
				}
				labels := map[string]string{"team": fmt.Sprintf("team-%d", i%50)}
				if i%10 == 0 {
					labels["istio-injection"] = "enabled"
				}
				if err := createNamespace(ctx, c, name(i), labels, lastApplied(name(i), labels)); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return "", firstErr
	}
	newest := name(n)
	labels := map[string]string{"istio-injection": "enabled"}
	return newest, createNamespace(ctx, c, newest, labels, lastApplied(newest, labels))
}

// lastApplied is the annotation `kubectl apply` leaves on a namespace it created, as on
// every namespace a GitOps pipeline applies: real namespaces carry more than labels.
func lastApplied(name string, labels map[string]string) map[string]string {
	obj, _ := json.Marshal(map[string]interface{}{
		"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]interface{}{"annotations": map[string]string{}, "labels": labels, "name": name},
	})
	return map[string]string{"kubectl.kubernetes.io/last-applied-configuration": string(obj) + "\n"}
}

// waitDefaulted returns once the webhook defaults w's Mapping, i.e. its cache has the
// namespace.
func waitDefaulted(tlsConfig *tls.Config, hook *server, w workload) error {
	c := newClient(tlsConfig, 1)
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := post(c, hook.base+w.path, w.body, true, true)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the webhook's cache never saw the namespace of %s: %v", w.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func mib(kib int64) float64 { return float64(kib) / 1024 }
