// Command load measures the webhook as a server, on 127.0.0.1 only, with bounded counts and
// times. `make bench` runs it; `go run ./test/load -h` lists the knobs.
//
// It starts a real control plane (kube-apiserver and etcd through the test/envtest harness,
// without the in-process webhook), builds and starts the real `webhook serve` as a separate
// process against it, and starts the server floor: the same controller-runtime webhook server
// and admission.Webhook, in a separate process too, with a handler that allows everything
// without reading the object. Then three phases:
//
//   - load: the same generator drives both servers over HTTPS (HTTP/2, as the API server
//     does) with AdmissionReviews kube-apiserver really sent (test/reviews) at concurrency 1,
//     8 and 32, and reports
//     reviews/s, p50, p99 and errors side by side;
//   - e2e: 500 Mappings created through the API server in a meshed namespace the webhook is
//     registered for, interleaved with 500 in one its namespaceSelector excludes and 500 in
//     one the floor server is registered for instead; the ratio of the median create
//     latencies is the webhook's end-to-end overhead, the floor's row what any webhook costs;
//   - scale: admission latency of Mappings with 100 and with 10,000 namespaces in the
//     webhook's cache, and the webhook's peak RSS (VmHWM in /proc/PID/status).
//
// The generator, the servers and the control plane share the machine, so every figure is
// reported next to its floor, measured in the same run.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

type options struct {
	webhook     string
	duration    time.Duration
	requests    int
	levels      []int
	phases      map[string]bool
	mappings    int
	namespaces  int
	scaleRounds int
	jsonOut     string
}

func main() {
	var o options
	var levels, phases, floorAddr, floorCerts string
	flag.StringVar(&o.webhook, "webhook", "", "webhook binary; built from ./cmd/webhook when empty")
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "length of each load run")
	flag.IntVar(&o.requests, "requests", 100000, "most reviews per load run")
	flag.StringVar(&levels, "concurrency", "1,8,32", "concurrency levels of the load phase")
	flag.StringVar(&phases, "phases", "load,e2e,scale", "phases to run")
	flag.IntVar(&o.mappings, "mappings", 500, "Mappings created per namespace in the e2e phase")
	flag.IntVar(&o.namespaces, "namespaces", 10000, "namespaces in the cache at the large end of the scale phase")
	flag.IntVar(&o.scaleRounds, "scale-rounds", 9, "alternating webhook/floor latency rounds at each end of the scale phase")
	flag.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	// Internal: the process that serves the floor.
	flag.StringVar(&floorAddr, "floor-serve", "", "internal: serve the allow-all floor on this host:port")
	flag.StringVar(&floorCerts, "floor-cert-dir", "", "internal: the floor's certificate directory")
	flag.Parse()

	if floorAddr != "" {
		if err := serveFloor(floorAddr, floorCerts); err != nil {
			fmt.Fprintln(os.Stderr, "floor:", err)
			os.Exit(1)
		}
		return
	}
	// The harness's clients log through controller-runtime; nothing here needs their lines.
	ctrllog.SetLogger(logr.Discard())
	for _, l := range strings.Split(levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(l))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bad -concurrency %q\n", levels)
			os.Exit(2)
		}
		o.levels = append(o.levels, n)
	}
	o.phases = map[string]bool{}
	for _, p := range strings.Split(phases, ",") {
		o.phases[strings.TrimSpace(p)] = true
	}

	res, err := run(o)
	if res != nil {
		res.print(os.Stdout)
		if o.jsonOut != "" {
			b, _ := json.MarshalIndent(res, "", "  ")
			if werr := os.WriteFile(o.jsonOut, b, 0o644); werr != nil && err == nil {
				err = werr
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}
