// Command promql parses PromQL expressions with Prometheus' own parser and lists the metric
// names each one selects. It reads a JSON array of expressions on stdin and writes a JSON
// array of results, one per expression, in order:
//
//	[{"expr": "...", "error": "parse error ...", "metrics": ["up", ...]}]
//
// It exits 0 whenever it could read its input: a bad expression is a result, not a failure.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Expr    string   `json:"expr"`
	Error   string   `json:"error,omitempty"`
	Metrics []string `json:"metrics,omitempty"`
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintln(os.Stderr, "promql: reading a JSON array of expressions on stdin:", err)
		os.Exit(2)
	}
	results := make([]result, len(exprs))
	for i, expr := range exprs {
		results[i] = check(expr)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "promql:", err)
		os.Exit(2)
	}
}

// check parses expr and collects the metric names of its vector and matrix selectors. A
// selector without a name ({__name__=~"..."} or none) is an error here: the dashboard test
// could not say which metric it reads.
func check(expr string) result {
	r := result{Expr: expr}
	ast, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			r.Error = fmt.Sprintf("selector %s names no metric", vs)
			return nil
		}
		if !slices.Contains(r.Metrics, name) {
			r.Metrics = append(r.Metrics, name)
		}
		return nil
	})
	slices.Sort(r.Metrics)
	return r
}
