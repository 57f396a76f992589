package ha

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Load is a steady stream of `kubectl apply` of new Emissary Deployments and Mappings (one of
// each in turn) by Workers concurrent appliers, each checked on what the API server stored:
// kubectl prints the stored object, which must carry the webhook's mutation.
type Load struct {
	Kubectl, Kubeconfig string
	Namespace           string // meshed: its Mappings get tls: istio-upstream
	Workers             int

	next    atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	results []Result
}

// Result is one admission: a `kubectl apply` of a new object.
type Result struct {
	Kind, Name string
	Start, End time.Time
	Err        error // failed: kubectl's error (the API server's answer)
	Unmutated  bool  // stored without the webhook's mutation
}

// Start begins the stream.
func (l *Load) Start(prefix string) {
	stop := make(chan struct{})
	l.stop = stop
	for range l.Workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				l.record(l.applyOne(prefix))
			}
		}()
	}
}

// Stop ends the stream and returns every admission since Start; nil if it is not running.
func (l *Load) Stop() []Result {
	if l.stop == nil {
		return nil
	}
	close(l.stop)
	l.stop = nil
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.results
	l.results = nil
	return out
}

func (l *Load) record(r Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.results = append(l.results, r)
}

func (l *Load) applyOne(prefix string) Result {
	i := l.next.Add(1)
	r := Result{Kind: "Deployment", Name: fmt.Sprintf("%s-%d", prefix, i), Start: time.Now()}
	manifest := emissaryDeployment(l.Namespace, r.Name)
	if i%2 == 0 {
		r.Kind, manifest = "Mapping", mapping(l.Namespace, r.Name)
	}
	cmd := exec.Command(l.Kubectl, "--kubeconfig", l.Kubeconfig, "apply", "-o", "json", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r.End = time.Now()
	if err != nil {
		r.Err = fmt.Errorf("%w: %s", err, strings.TrimSpace(errOut.String()))
		return r
	}
	r.Unmutated = !mutated(r.Kind, out.Bytes())
	return r
}

// mutated reports whether the stored object kubectl printed carries the webhook's mutation.
func mutated(kind string, stored []byte) bool {
	var obj struct {
		Spec struct {
			TLS      interface{} `json:"tls"`
			Template struct {
				Spec struct {
					Containers []struct {
						Name string `json:"name"`
					} `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if json.Unmarshal(stored, &obj) != nil {
		return false
	}
	if kind == "Mapping" {
		return obj.Spec.TLS == "istio-upstream"
	}
	for _, c := range obj.Spec.Template.Spec.Containers {
		if c.Name == "istio-proxy" {
			return true
		}
	}
	return false
}

func emissaryDeployment(ns, name string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata: {name: ` + name + `, namespace: ` + ns + `}
spec:
  selector: {matchLabels: {app: ` + name + `}}
  template:
    metadata: {labels: {app: ` + name + `}}
    spec:
      containers:
      - {name: ambassador, image: docker.io/emissaryingress/emissary:3.10.0}
`
}

func mapping(ns, name string) string {
	return `apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata: {name: ` + name + `, namespace: ` + ns + `}
spec: {prefix: /` + name + `/, service: quote}
`
}

// Summary counts results.
type Summary struct {
	Attempted, Failed, Unmutated int
	Failures                     []Result
}

// Summarize counts rs.
func Summarize(rs []Result) Summary {
	s := Summary{Attempted: len(rs)}
	for _, r := range rs {
		switch {
		case r.Err != nil:
			s.Failed++
			s.Failures = append(s.Failures, r)
		case r.Unmutated:
			s.Unmutated++
			s.Failures = append(s.Failures, r)
		}
	}
	return s
}

func (s Summary) String() string {
	return fmt.Sprintf("attempted %d, failed %d, stored without mutation %d", s.Attempted, s.Failed, s.Unmutated)
}
