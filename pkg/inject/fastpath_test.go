package inject

import "testing"

// TestUpToDateFastPath: a stored, server-defaulted injected Deployment (what every re-apply
// sends) is recognised as up to date by the encoding comparison alone, without the reflective
// one (the handler's Noop benchmark depends on it).
func TestUpToDateFastPath(t *testing.T) {
	d := readDeployment(t, "already-injected-server-defaulted")
	old, err := ParseStatus(&d.Spec.Template)
	if err != nil || old == nil {
		t.Fatalf("status %v, %v", old, err)
	}
	work := d.Spec.Template.DeepCopy()
	strip(work, old, false)
	st, _, err := Inject(work, old.EmissaryContainer, serviceName(d), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if !sameEncoding(&d.Spec.Template, withServerDefaults(work)) {
		t.Error("the stored template does not encode like the defaulted rendering: every no-op admission pays for a reflective comparison")
	}
	if !sameTemplate(&d.Spec.Template, work, old, st) {
		t.Error("not up to date")
	}
}
