package inject

import (
	"reflect"
	"testing"
)

// TestAudit: what `webhook audit` says about each golden input as stored (before the
// webhook saw it) and about each golden output (what the webhook stored): every edge without
// the integration is a finding with its reason; what the webhook stored, helpers, other
// applications, Pods with an owner and hand-written integrations are not.
func TestAudit(t *testing.T) {
	want := map[string]string{
		"seed-without-proxy":                AuditNotInjected,
		"chart-daemonset":                   AuditNotInjected,
		"chart-bare-pod":                    AuditNotInjected,
		"chart-renamed-image":               AuditNotInjected,
		"custom-emissary-images":            "", // the default emissaryImages do not know its image
		"already-injected-old-version":      AuditStaleConfig,
		"stale-status":                      AuditStaleConfig,
		"bare-pod-old-config":               AuditStaleConfig,
		"already-injected-server-defaulted": "",
		"opt-out":                           ReasonOptOut,
		"opt-out-after-injection":           AuditStaleInjection,
		"chart-host-network":                ReasonHostNetwork,
		"chart-unknown-image":               ReasonUnknownImage,
		"opt-in-container-not-found":        ReasonContainerNotFound,
		"seed-hand-written":                 "",
		"non-emissary":                      "",
		"apiext-3x":                         "",
		"apiext-4x":                         "",
		"consul-connector":                  "",
		"agent-2x":                          "",
		"agent-3x":                          "",
		"aes-injector":                      "",
		"replicaset-pod":                    "",
	}
	for name, reason := range want {
		t.Run(name, func(t *testing.T) {
			w := readWorkload(t, name)
			before := copyWorkload(w)
			f, found := Audit(w, DefaultConfig())
			if f.Reason != reason || found != (reason != "") || (found && f.Message == "") {
				t.Errorf("got %+v (found %v), want reason %q", f, found, reason)
			}
			if !reflect.DeepEqual(object(w), object(before)) {
				t.Error("Audit changed the workload")
			}
		})
	}
	// What the webhook stores is never a finding.
	for _, name := range inputNames(t) {
		w := NewWorkload(readObject(t, name).DeepCopyObject())
		cfg := configFor(t, name)
		if res := Apply(w, cfg); !res.Changed() {
			continue
		}
		if f, found := Audit(w, cfg); found && f.Reason != ReasonOptOut {
			t.Errorf("%s as the webhook stores it: %+v", name, f)
		}
	}
}
