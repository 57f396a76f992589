package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/mutate"
	"github.com/emissary-istio/emissary-istio-webhook/test/reviews"
)

// workload is one kind of review the generator sends.
type workload struct {
	name      string
	path      string // the webhook's path
	body      []byte
	wantPatch bool // what the webhook answers (the floor never patches)
}

func workloads() ([]workload, error) {
	var ws []workload
	for _, w := range []struct {
		name, path string
		build      func() ([]byte, error)
		wantPatch  bool
	}{
		{"deployment (inject)", mutate.DeploymentPath, reviews.Seed, true},
		{"deployment (no-op update)", mutate.DeploymentPath, reviews.Noop, false},
		{"mapping (default tls)", mutate.MappingPath, reviews.Mapping, true},
	} {
		body, err := w.build()
		if err != nil {
			return nil, err
		}
		ws = append(ws, workload{name: w.name, path: w.path, body: body, wantPatch: w.wantPatch})
	}
	return ws, nil
}

// LoadRun is one generator run against one server.
type LoadRun struct {
	Server      string  `json:"server"` // webhook or floor
	Workload    string  `json:"workload"`
	Concurrency int     `json:"concurrency"`
	Reviews     int     `json:"reviews"`
	Errors      int     `json:"errors"`
	FirstError  string  `json:"firstError,omitempty"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"perSecond"`
	P50ms       float64 `json:"p50ms"`
	P99ms       float64 `json:"p99ms"`
	// CPU time per review of the server process and of this generator, in microseconds:
	// where the time went, independent of what else the machine was doing.
	ServerCPUus    float64 `json:"serverCPUus"`
	GeneratorCPUus float64 `json:"generatorCPUus"`
}

func loadPhase(o options, tlsConfig *tls.Config, hook, floor *server) ([]LoadRun, error) {
	ws, err := workloads()
	if err != nil {
		return nil, err
	}
	var runs []LoadRun
	for _, w := range ws {
		// Warm both up (connections, heap) before measuring.
		for _, s := range []*server{hook, floor} {
			drive(tlsConfig, s, w, 4, 500*time.Millisecond, o.requests, s == hook)
		}
		for i, c := range o.levels {
			// Alternate which server goes first, so that drift in the machine's load does not
			// always favour the same one.
			order := []*server{floor, hook}
			if i%2 == 1 {
				order = []*server{hook, floor}
			}
			for _, s := range order {
				r := drive(tlsConfig, s, w, c, o.duration, o.requests, s == hook)
				fmt.Printf("   %-8s %-26s c=%-3d %8.0f reviews/s  p50 %6.2fms  p99 %6.2fms  errors %d  cpu/review: server %.0fus generator %.0fus\n",
					r.Server, r.Workload, r.Concurrency, r.PerSecond, r.P50ms, r.P99ms, r.Errors, r.ServerCPUus, r.GeneratorCPUus)
				runs = append(runs, r)
			}
		}
	}
	return runs, nil
}

// newClient is an HTTPS client like the API server's webhook client: HTTP/2, kept alive.
func newClient(tlsConfig *tls.Config, concurrency int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     tlsConfig.Clone(),
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: concurrency,
		},
	}
}

// drive sends w's review to s from concurrency workers until d has passed or max reviews
// were sent. An error is a failed request, a status other than 200, or an answer other than
// the one the review wants. Every answer is checked: by its bytes (quick, so that the
// generator, which shares the cores, does not spend more on the webhook's larger answers
// than the server does), and every 16th by decoding it whole.
func drive(tlsConfig *tls.Config, s *server, w workload, concurrency int, d time.Duration, max int, isWebhook bool) LoadRun {
	c := newClient(tlsConfig, concurrency)
	defer c.CloseIdleConnections()
	wantPatch := w.wantPatch && isWebhook
	url := s.base + w.path

	var (
		sent      atomic.Int64
		mu        sync.Mutex
		latencies []time.Duration
		errs      int
		firstErr  string
		wg        sync.WaitGroup
	)
	serverCPU0, genCPU0 := processCPU(s.cmd.Process.Pid), selfCPU()
	start := time.Now()
	deadline := start.Add(d)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			var myErrs int
			var myFirst string
			for n := 0; time.Now().Before(deadline) && sent.Add(1) <= int64(max); n++ {
				t0 := time.Now()
				err := post(c, url, w.body, wantPatch, n%16 == 0)
				mine = append(mine, time.Since(t0))
				if err != nil {
					if myErrs == 0 {
						myFirst = err.Error()
					}
					myErrs++
				}
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			errs += myErrs
			if firstErr == "" {
				firstErr = myFirst
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	serverCPU, genCPU := processCPU(s.cmd.Process.Pid)-serverCPU0, selfCPU()-genCPU0

	slices.Sort(latencies)
	r := LoadRun{
		Server: s.name, Workload: w.name, Concurrency: concurrency,
		Reviews: len(latencies), Errors: errs, FirstError: firstErr, Seconds: elapsed.Seconds(),
		PerSecond: float64(len(latencies)) / elapsed.Seconds(),
		P50ms:     ms(percentile(latencies, 0.50)), P99ms: ms(percentile(latencies, 0.99)),
	}
	if n := float64(len(latencies)); n > 0 {
		r.ServerCPUus = float64(serverCPU.Microseconds()) / n
		r.GeneratorCPUus = float64(genCPU.Microseconds()) / n
	}
	return r
}

func post(c *http.Client, url string, body []byte, wantPatch, decode bool) error {
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %.200s", resp.StatusCode, out)
	}
	if !decode {
		// What reviews.Check verifies, read off the encoded answer.
		if bytes.Contains(out, []byte(`"uid":"`+reviews.UID+`"`)) && bytes.Contains(out, []byte(`"allowed":true`)) &&
			bytes.Contains(out, []byte(`"patch":"`)) == wantPatch {
			return nil
		}
	}
	ar, err := reviews.Response(out)
	if err != nil {
		return err
	}
	return reviews.Check(ar, wantPatch)
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// processCPU is the CPU time pid has used (utime + stime in /proc/PID/stat).
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces: count from after it.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every Linux platform Go
// supports.
const clockTicks = 100

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
