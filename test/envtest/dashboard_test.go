package envtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/emissary-istio/emissary-istio-webhook/test/reviews"
)

// dashboardFile is the Grafana dashboard the grafana-dashboard component and the chart ship.
var dashboardFile = filepath.Join(RepoRoot(), "manifests", "components", "grafana-dashboard", "emissary-istio-dashboard.json")

// dashboard is the part of Grafana's dashboard model the test reads.
type dashboard struct {
	Panels     []dashboardPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name     string          `json:"name"`
			Type     string          `json:"type"`
			Query    json.RawMessage `json:"query"`
			AllValue string          `json:"allValue"`
		} `json:"list"`
	} `json:"templating"`
}

type dashboardPanel struct {
	ID         int              `json:"id"`
	Type       string           `json:"type"`
	Title      string           `json:"title"`
	Datasource *datasourceRef   `json:"datasource"`
	Panels     []dashboardPanel `json:"panels"` // a collapsed row's
	Targets    []struct {
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
}

type datasourceRef struct{ Type, UID string }

// TestDashboard checks the shipped dashboard against the real things it depends on: every
// query parses with Prometheus' own PromQL parser (bin/tools/promql, built from
// github.com/prometheus/prometheus), and every metric it reads that is not Envoy's (Emissary's
// edge) or Prometheus' own `up` is exported on /metrics by a running `webhook serve` (the
// binary, started against the control plane, after admissions of each outcome). A renamed
// metric fails here, as does a webhook metric family the dashboard does not show.
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	exprs := dashboardQueries(t, &d)
	results := parsePromQL(t, exprs)

	used := map[string][]string{} // metric -> panels
	for i, r := range results {
		if r.Error != "" {
			t.Errorf("%s: %s", exprs[i].where, r.Error)
		}
		for _, m := range r.Metrics {
			used[m] = append(used[m], exprs[i].where)
		}
	}
	// The seed's "Registered Services" metric, as its guide spells it.
	if !slices.ContainsFunc(exprs, func(e query) bool {
		return strings.Contains(e.promql, `envoy_cluster_manager_active_clusters{job="ambassador"}`)
	}) {
		t.Error(`no panel reads the seed's envoy_cluster_manager_active_clusters{job="ambassador"}`)
	}

	series, families := scrapeWebhookMetrics(t)
	for metric, where := range used {
		switch {
		case strings.HasPrefix(metric, "envoy_"), metric == "up":
			// Emissary's Envoy, and the series Prometheus makes for every target.
		case !series[metric]:
			t.Errorf("%s reads %s, which `webhook serve` does not export", where[0], metric)
		}
	}
	for _, family := range families {
		if !strings.HasPrefix(family, "emissary_istio_webhook_") {
			continue
		}
		shown := false
		for metric := range used {
			shown = shown || metric == family || strings.HasPrefix(metric, family+"_")
		}
		if !shown {
			t.Errorf("the webhook exports %s, which no panel shows", family)
		}
	}
	t.Logf("%d queries read %d metrics; /metrics lists %d families", len(exprs), len(used), len(families))
}

// query is one PromQL expression of the dashboard, its variables replaced.
type query struct {
	where, promql string
}

// grafanaVariable matches $name, ${name} and ${name:format}.
var grafanaVariable = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)`)

// dashboardQueries returns every PromQL expression of the dashboard (panel targets and the
// selectors of label_values() variable queries), with Grafana's variables replaced as
// Grafana does before sending them: the interval ones by a duration, the dashboard's own by
// their default. It also checks that panel ids are unique and every query uses the
// dashboard's data source variable.
func dashboardQueries(t *testing.T, d *dashboard) []query {
	t.Helper()
	values := map[string]string{"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
	var queries []query
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
		case "textbox":
			var s string
			if err := json.Unmarshal(v.Query, &s); err != nil {
				t.Fatalf("variable %s: %v", v.Name, err)
			}
			values[v.Name] = s
		case "query":
			var q struct{ Query string }
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Fatalf("variable %s: %v", v.Name, err)
			}
			m := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`).FindStringSubmatch(q.Query)
			if m == nil {
				t.Fatalf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
			}
			queries = append(queries, query{where: "variable " + v.Name, promql: m[1]})
			values[v.Name] = v.AllValue
		default:
			t.Fatalf("variable %s has type %s, which the test does not know", v.Name, v.Type)
		}
	}
	ids := map[int]string{}
	var walk func([]dashboardPanel)
	walk = func(panels []dashboardPanel) {
		for _, p := range panels {
			if other, dup := ids[p.ID]; dup {
				t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for i, target := range p.Targets {
				for _, ds := range []*datasourceRef{p.Datasource, target.Datasource} {
					if ds == nil || ds.Type != "prometheus" || ds.UID != "${datasource}" {
						t.Errorf("panel %q: data source %+v, want the dashboard's ${datasource}", p.Title, ds)
					}
				}
				queries = append(queries, query{where: fmt.Sprintf("panel %q query %d", p.Title, i), promql: target.Expr})
			}
		}
	}
	walk(d.Panels)
	for i := range queries {
		queries[i].promql = grafanaVariable.ReplaceAllStringFunc(queries[i].promql, func(v string) string {
			m := grafanaVariable.FindStringSubmatch(v)
			name := m[1] + m[2]
			value, ok := values[name]
			if !ok {
				t.Errorf("%s uses $%s, which is not a variable of the dashboard", queries[i].where, name)
			}
			return value
		})
	}
	return queries
}

// promqlResult is bin/tools/promql's answer for one expression.
type promqlResult struct {
	Error   string   `json:"error"`
	Metrics []string `json:"metrics"`
}

// parsePromQL runs bin/tools/promql (`make test` builds it) over the expressions.
func parsePromQL(t *testing.T, queries []query) []promqlResult {
	t.Helper()
	bin := filepath.Join(RepoRoot(), "bin", "tools", "promql")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%v: run `make promql` (`make test` does)", err)
	}
	var exprs []string
	for _, q := range queries {
		exprs = append(exprs, q.promql)
	}
	in, _ := json.Marshal(exprs)
	cmd := exec.Command(bin)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("promql: %v", err)
	}
	var results []promqlResult
	if err := json.Unmarshal(out, &results); err != nil || len(results) != len(exprs) {
		t.Fatalf("promql answered %d results for %d expressions (%v)", len(results), len(exprs), err)
	}
	return results
}

// scrapeWebhookMetrics starts `webhook serve` (the binary) against the shared control plane
// with the shared serving certificate, sends it admissions that it mutates, leaves alone and
// fails (so every labelled series exists), and returns the series names its /metrics lists
// (histograms as their _bucket, _sum and _count series, as PromQL reads them) and the
// metric families.
func scrapeWebhookMetrics(t *testing.T) (series map[string]bool, families []string) {
	t.Helper()
	ports := make([]string, 3)
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = strconv.Itoa(p)
	}
	hook, metrics, health := net.JoinHostPort("127.0.0.1", ports[0]), net.JoinHostPort("127.0.0.1", ports[1]), net.JoinHostPort("127.0.0.1", ports[2])
	startWebhookProcess(t, env.Kubeconfig, "serve", "--host=127.0.0.1", "--port="+ports[0], "--cert-dir="+env.CertDir,
		"--metrics-bind-address="+metrics, "--health-probe-bind-address="+health)
	eventually(t, 30*time.Second, func() (string, bool) {
		resp, err := http.Get("http://" + health + "/readyz")
		if err != nil {
			return err.Error(), false
		}
		resp.Body.Close()
		return "not ready: " + resp.Status, resp.StatusCode == http.StatusOK
	})

	c := biClient(env)
	seed, err := reviews.Seed()
	if err != nil {
		t.Fatal(err)
	}
	mapping, err := reviews.Mapping()
	if err != nil {
		t.Fatal(err)
	}
	notADeployment := biReview("admission.k8s.io/v1", biRequest("dashboard-decode-error",
		map[string]string{"group": "apps", "version": "v1", "kind": "Deployment"}, "CREATE",
		[]byte(`{"apiVersion":"apps/v1","kind":"Deployment","spec":"not an object"}`)))
	for path, body := range map[string][]byte{"/mutate-deployments": seed, "/mutate-mappings": mapping} {
		if resp := postReview(t, c, "https://"+hook+path, body); !resp.Allowed {
			t.Fatalf("%s: %+v", path, resp.Result)
		}
	}
	if resp := postReview(t, c, "https://"+hook+"/mutate-deployments", notADeployment); resp.Allowed {
		t.Fatal("a Deployment that does not decode was allowed: no error metric to read")
	}

	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	parsed, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	series = map[string]bool{}
	for name, f := range parsed {
		families = append(families, name)
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			series[name+"_bucket"], series[name+"_sum"], series[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			series[name], series[name+"_sum"], series[name+"_count"] = true, true, true
		default:
			series[name] = true
		}
	}
	slices.Sort(families)
	return series, families
}
