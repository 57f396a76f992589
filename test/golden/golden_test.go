package golden

import (
	"os"
	"path/filepath"
	"testing"
)

// recorder is a testing.TB that records failures instead of failing the test.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) Fatalf(string, ...any) { r.failed = true }
func (r *recorder) Fatal(...any)          { r.failed = true }

// TestAssert: without UPDATE_GOLDEN a difference or a missing file fails; with it the file
// is written, and then matches.
func TestAssert(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.golden.txt")
	t.Setenv(UpdateEnv, "")
	for name, setup := range map[string]func(){
		"missing": func() {},
		"differs": func() { _ = os.WriteFile(path, []byte("old\n"), 0o644) },
	} {
		setup()
		r := &recorder{TB: t}
		Assert(r, path, []byte("new\n"))
		if !r.failed {
			t.Errorf("%s: Assert passed", name)
		}
	}

	t.Setenv(UpdateEnv, "1")
	r := &recorder{TB: t}
	Assert(r, path, []byte("new\n"))
	if got, err := os.ReadFile(path); r.failed || err != nil || string(got) != "new\n" {
		t.Fatalf("UPDATE_GOLDEN=1 did not write the file: %q %v", got, err)
	}
	t.Setenv(UpdateEnv, "")
	if Assert(r, path, []byte("new\n")); r.failed {
		t.Fatal("the rewritten file does not match")
	}
}
