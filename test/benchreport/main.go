// Command benchreport runs the pkg/mutate benchmarks in rounds, reads the results of
// test/load, and writes docs/PERFORMANCE.md: every figure next to its floor and its target.
// `make bench` runs it after test/load.
//
// Each round runs every benchmark once, a floor right before its handler, so that the two
// see the same machine; a ratio is taken per round and the median over rounds is reported.
// On a machine shared with other work this is far steadier than comparing two medians taken
// minutes apart.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// pair is a handler benchmark and its floor, with the target for their ratio.
type pair struct {
	handler, floor string
	target         float64
	what           string
}

var pairs = []pair{
	{"AdmitDeployment", "ReviewFloor", 2.0, "the guide's Emissary Deployment, injected (CREATE)"},
	{"AdmitDeploymentLarge", "ReviewFloorLarge", 2.0, "that Deployment with 1,000 env vars and 200 volume mounts, injected"},
	{"AdmitDeploymentNoop", "ReviewFloorNoop", 1.5, "the stored injected Deployment re-applied (UPDATE, no patch)"},
	{"AdmitMapping", "ReviewFloorMapping", 1.5, "the guide's Mapping to a meshed namespace, defaulted"},
}

// peer is Istio's own sidecar injector on the guide's Emissary pod, compared with the
// webhook's injection of the guide's Deployment (see hack/tools/istio/injectbench).
var peer = struct{ name, ours string }{"IstioInjectEmissaryPod", "AdmitDeployment"}

// sample is one benchmark result line.
type sample struct {
	ns, cpuNs, bytes, allocs float64
}

func main() {
	rounds := flag.Int("rounds", 12, "benchmark rounds")
	benchtime := flag.String("benchtime", "0.5s", "-test.benchtime of each benchmark in a round")
	loadJSON := flag.String("load", "", "results of test/load (-json); their section is left out when empty")
	out := flag.String("out", "docs/PERFORMANCE.md", "the report")
	raw := flag.String("raw", "bin/perf/bench.txt", "all benchmark output, for benchstat")
	flag.Parse()

	if err := run(*rounds, *benchtime, *loadJSON, *out, *raw); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run(rounds int, benchtime, loadJSON, out, raw string) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	start := time.Now().UTC()
	load0 := loadAvg()
	samples, err := runBenchmarks(root, rounds, benchtime, raw)
	if err != nil {
		return err
	}
	var load *loadResults
	if loadJSON != "" {
		b, err := os.ReadFile(loadJSON)
		if err != nil {
			return err
		}
		load = &loadResults{}
		if err := json.Unmarshal(b, load); err != nil {
			return fmt.Errorf("%s: %w", loadJSON, err)
		}
	}
	var doc bytes.Buffer
	writeReport(&doc, report{
		start: start, loadBefore: load0, loadAfter: loadAvg(), rounds: rounds, benchtime: benchtime,
		samples: samples, load: load,
	})
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(out, doc.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", out)
	return nil
}

// benchBinary is a test binary of benchmarks, run once per round.
type benchBinary struct {
	module, pkg string   // go test -c of pkg, in the module at module (relative to the root)
	bin         string   // file name under bin/perf
	names       []string // the benchmarks it runs
}

// binaries: the webhook's handler benchmarks and their floors, then the peer, Istio's own
// injector (hack/tools/istio/injectbench, a module of its own), right after them in each round.
func binaries() []benchBinary {
	mutate := benchBinary{module: ".", pkg: "./pkg/mutate", bin: "mutate.test"}
	for _, p := range pairs {
		mutate.names = append(mutate.names, p.floor, p.handler)
	}
	return []benchBinary{mutate, {module: "hack/tools/istio", pkg: "./injectbench", bin: "istioinject.test", names: []string{peer.name}}}
}

// runBenchmarks compiles each test binary once and runs every benchmark once per round. It
// returns the samples by benchmark name, one per round.
func runBenchmarks(root string, rounds int, benchtime, raw string) (map[string][]sample, error) {
	bins := binaries()
	for _, b := range bins {
		path := filepath.Join(root, "bin", "perf", b.bin)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		build := exec.Command("go", "test", "-c", "-o", path, b.pkg)
		build.Dir, build.Stdout, build.Stderr = filepath.Join(root, b.module), os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return nil, fmt.Errorf("building the benchmarks of %s: %w", b.pkg, err)
		}
	}
	rawOut, err := os.Create(raw)
	if err != nil {
		return nil, err
	}
	defer rawOut.Close()

	samples := map[string][]sample{}
	for r := 1; r <= rounds; r++ {
		fmt.Fprintf(os.Stderr, ">> benchmark round %d/%d\n", r, rounds)
		for _, b := range bins {
			pattern := "^Benchmark(" + strings.Join(b.names, "|") + ")$"
			cmd := exec.Command(filepath.Join(root, "bin", "perf", b.bin), "-test.run", "^$", "-test.bench", pattern, "-test.benchtime", benchtime)
			cmd.Dir = filepath.Join(root, b.module, b.pkg) // the benchmarks read testdata relative to it
			var stdout bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				return nil, fmt.Errorf("benchmark round %d: %w\n%s", r, err, stdout.String())
			}
			_, _ = rawOut.Write(stdout.Bytes())
			for name, s := range parseBench(stdout.Bytes()) {
				samples[name] = append(samples[name], s)
			}
		}
	}
	for _, b := range bins {
		for _, n := range b.names {
			if len(samples[n]) != rounds {
				return nil, fmt.Errorf("benchmark %s: %d results in %d rounds", n, len(samples[n]), rounds)
			}
		}
	}
	return samples, nil
}

var benchLine = regexp.MustCompile(`^Benchmark(\w+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// parseBench reads `go test -bench` output: name, then value-unit pairs.
func parseBench(out []byte) map[string]sample {
	res := map[string]sample{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		var s sample
		f := strings.Fields(m[2])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				s.ns = v
			case "cpu-ns/op":
				s.cpuNs = v
			case "B/op":
				s.bytes = v
			case "allocs/op":
				s.allocs = v
			}
		}
		res[m[1]] = s
	}
	return res
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// machine describes where the figures were taken.
func machine() (cpus int, model string) {
	model = "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return runtime.NumCPU(), model
}

// loadAvg is the first field of /proc/loadavg: how busy the machine was.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}
