package envtest

import (
	"os"
	"path/filepath"
	"testing"
)

// TestNewestAssets: bin/k8s/<version> directories are ordered as versions (v1.37.2 is newer
// than v1.9.0, which a string sort puts first), and only complete ones count.
func TestNewestAssets(t *testing.T) {
	root := t.TempDir()
	for dir, binaries := range map[string][]string{
		"v1.9.0":        {"kube-apiserver", "etcd", "kubectl"},
		"v1.37.2":       {"kube-apiserver", "etcd", "kubectl"},
		"v1.37.10-rc.0": {"kube-apiserver", "etcd", "kubectl"},
		"v1.38.0":       {"kube-apiserver", "etcd"}, // a build that was interrupted
		"latest":        {"kube-apiserver", "etcd", "kubectl"},
	} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, b := range binaries {
			if err := os.WriteFile(filepath.Join(root, dir, b), nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, want := NewestVersionDir(root, hasAssets), filepath.Join(root, "v1.37.10-rc.0"); got != want {
		t.Fatalf("NewestVersionDir = %s, want %s", got, want)
	}
	if got := NewestVersionDir(t.TempDir(), hasAssets); got != "" {
		t.Fatalf("an empty bin/k8s: NewestVersionDir = %q, want none", got)
	}
}
