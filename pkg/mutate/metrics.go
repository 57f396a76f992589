package mutate

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics are the webhook's own Prometheus series, beside controller-runtime's
// controller_runtime_webhook_* ones. Labels are low-cardinality: the kind handled, what was
// done, and the stable reason string from pkg/inject or pkg/mapping.
type Metrics struct {
	admissions *prometheus.CounterVec
	errors     *prometheus.CounterVec
	latency    *prometheus.HistogramVec
}

// NewMetrics creates the series and registers them on reg (nil: not registered, for tests
// and the offline CLI).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "emissary_istio_webhook_admissions_total",
			Help: "Admission requests handled, by kind, action (mutated, unchanged, skipped) and reason.",
		}, []string{"kind", "action", "reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "emissary_istio_webhook_admission_errors_total",
			Help: "Admission requests answered with an error, by kind and reason.",
		}, []string{"kind", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "emissary_istio_webhook_admission_duration_seconds",
			Help:    "Time spent deciding and building the answer for one admission request, by kind.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5},
		}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.admissions, m.errors, m.latency)
	}
	return m
}

// DefaultMetrics is registered on controller-runtime's registry, which its metrics server
// exposes.
var DefaultMetrics = NewMetrics(crmetrics.Registry)

// Kinds and actions used as label values.
const (
	kindDeployment = "Deployment"
	kindMapping    = "Mapping"

	actionMutated   = "mutated"
	actionUnchanged = "unchanged"
	actionSkipped   = "skipped"
)

func (m *Metrics) observe(kind, action, reason string, start time.Time) {
	m.admissions.WithLabelValues(kind, action, reason).Inc()
	m.latency.WithLabelValues(kind).Observe(time.Since(start).Seconds())
}

func (m *Metrics) failed(kind, reason string, start time.Time) {
	m.errors.WithLabelValues(kind, reason).Inc()
	m.latency.WithLabelValues(kind).Observe(time.Since(start).Seconds())
}
