// Package golden compares test output with testdata/*.golden.* files. With UPDATE_GOLDEN=1
// in the environment it rewrites them instead: `make golden`, or
// `UPDATE_GOLDEN=1 go test ./...` (then review the diff). An environment variable reaches
// every test binary `go test` runs, so no package needs to import this one just to accept a
// flag.
package golden

import (
	"bytes"
	"os"
	"testing"
)

// UpdateEnv is the environment variable that makes Assert rewrite golden files.
const UpdateEnv = "UPDATE_GOLDEN"

// Assert fails t when got differs from the file at path; with UPDATE_GOLDEN=1 it writes got
// there.
func Assert(t testing.TB, path string, got []byte) {
	t.Helper()
	if os.Getenv(UpdateEnv) == "1" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (make golden writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (make golden rewrites it; review the diff):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
