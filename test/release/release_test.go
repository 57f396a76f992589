// Package release tests dist/, what `make release` builds and a release publishes
// (docs/releasing.md): the CLI for each platform, the SBOMs, the checksums, the chart
// installed from its package by the real helm onto a real API server, and `make publish`
// pushing the image and the chart to a registry (go-containerregistry's, in-process on
// loopback) from which they come back, by digest, byte for byte.
package release

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"debug/macho"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
)

// platforms are the Makefile's CLI_PLATFORMS.
var platforms = []struct{ os, arch string }{
	{"linux", "amd64"}, {"linux", "arm64"}, {"darwin", "amd64"}, {"darwin", "arm64"},
}

const (
	name      = "emissary-istio-webhook"
	license   = "Apache-2.0"
	sumsFile  = "SHA256SUMS"
	chartMime = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
)

func distDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(envtest.RepoRoot(), "dist")
	if _, err := os.Stat(filepath.Join(dir, sumsFile)); err != nil {
		t.Fatalf("%v: run `make release` (`make test` does)", err)
	}
	return dir
}

// runMake runs make in the repository, outside of any make that runs this test (whose
// jobserver it must not inherit), and returns its standard output.
func runMake(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("make", append([]string{"--no-print-directory", "-s"}, args...)...)
	cmd.Dir = envtest.RepoRoot()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "MAKEFLAGS" && k != "MAKELEVEL" && k != "MFLAGS" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("make %v: %v\n%s%s", args, err, out, stderr)
	}
	return string(out)
}

// version is the Makefile's VERSION.
func version(t *testing.T) string {
	t.Helper()
	v := strings.TrimSpace(runMake(t, "print-version"))
	if !strings.HasPrefix(v, "v") {
		t.Fatalf("make print-version says %q", v)
	}
	return v
}

func binary(dist, version, goos, goarch string) string {
	return filepath.Join(dist, name+"-"+version+"-"+goos+"-"+goarch)
}

// TestChecksums: SHA256SUMS lists every other file of dist/ once, each checksum is right,
// and sha256sum --check, which users run, agrees.
func TestChecksums(t *testing.T) {
	dist := distDir(t)
	f, err := os.Open(filepath.Join(dist, sumsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	listed := map[string]string{}
	for s := bufio.NewScanner(f); s.Scan(); {
		sum, file, ok := strings.Cut(s.Text(), "  ")
		if !ok || len(sum) != sha256.Size*2 {
			t.Fatalf("%s: %q is not sha256sum's format", sumsFile, s.Text())
		}
		if _, dup := listed[file]; dup {
			t.Errorf("%s lists %s twice", sumsFile, file)
		}
		listed[file] = sum
	}
	entries, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		if e.Name() == sumsFile {
			continue
		}
		files = append(files, e.Name())
		raw, err := os.ReadFile(filepath.Join(dist, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(raw)
		if got, want := hex.EncodeToString(sum[:]), listed[e.Name()]; got != want {
			t.Errorf("%s: sha256 %s, %s says %q", e.Name(), got, sumsFile, want)
		}
	}
	if got := slices.Sorted(maps.Keys(listed)); !slices.Equal(got, files) {
		t.Errorf("%s lists %v; dist/ holds %v", sumsFile, got, files)
	}
	cmd := exec.Command("sha256sum", "--check", "--strict", sumsFile)
	cmd.Dir = dist
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sha256sum --check: %v\n%s", err, out)
	}
}

// TestCLI: a binary per platform, static, for its platform, built as the Makefile says
// (go version -m shows the build settings); the host's own prints the release's version.
func TestCLI(t *testing.T) {
	dist, v := distDir(t), version(t)
	ran := false
	for _, p := range platforms {
		t.Run(p.os+"/"+p.arch, func(t *testing.T) {
			bin := binary(dist, v, p.os, p.arch)
			checkExecutable(t, bin, p.os, p.arch)
			settings := buildInfo(t, bin).settings
			for key, want := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true", "GOOS": p.os, "GOARCH": p.arch} {
				if settings[key] != want {
					t.Errorf("build setting %s = %q, want %q", key, settings[key], want)
				}
			}
			// With -trimpath the go command leaves -ldflags out of the build information, so
			// the version -X stamps is looked for in the binary's data itself.
			raw, err := os.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(raw, []byte(v)) {
				t.Errorf("%s does not carry the version %s (pkg/inject.Version)", bin, v)
			}
			if p.os != runtime.GOOS || p.arch != runtime.GOARCH {
				return
			}
			ran = true
			out, err := exec.Command(bin, "version").Output()
			if err != nil {
				t.Fatalf("%s version: %v", bin, err)
			}
			if got := strings.TrimSpace(string(out)); got != v {
				t.Errorf("`version` prints %q, want %q", got, v)
			}
		})
	}
	if !ran {
		t.Errorf("no binary for this platform (%s/%s) to run", runtime.GOOS, runtime.GOARCH)
	}
}

// checkExecutable: an ELF (linux) or Mach-O (darwin) executable for arch, and on linux one
// that asks for no dynamic loader (CGO_ENABLED=0).
func checkExecutable(t *testing.T, file, goos, arch string) {
	t.Helper()
	switch goos {
	case "linux":
		f, err := elf.Open(file)
		if err != nil {
			t.Fatalf("not an ELF binary: %v", err)
		}
		defer f.Close()
		if want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]; f.Machine != want {
			t.Errorf("ELF machine %v, want %v", f.Machine, want)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("the binary asks for a dynamic loader")
			}
		}
	case "darwin":
		f, err := macho.Open(file)
		if err != nil {
			t.Fatalf("not a Mach-O binary: %v", err)
		}
		defer f.Close()
		if want := map[string]macho.Cpu{"amd64": macho.CpuAmd64, "arm64": macho.CpuArm64}[arch]; f.Cpu != want {
			t.Errorf("Mach-O CPU %v, want %v", f.Cpu, want)
		}
	default:
		t.Fatalf("no check for %s", goos)
	}
}

// info is what `go version -m` reports of a binary.
type info struct {
	main     string          // the main module's path
	deps     map[string]bool // path@version of every module linked in (after replacements)
	settings map[string]string
}

func buildInfo(t *testing.T, bin string) info {
	t.Helper()
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m %s: %v", bin, err)
	}
	in := info{deps: map[string]bool{}, settings: map[string]string{}}
	var last string // the dep line a "=>" line replaces
	for line := range strings.SplitSeq(string(out), "\n") {
		fields := strings.Split(strings.TrimPrefix(line, "\t"), "\t")
		switch fields[0] {
		case "mod":
			in.main = fields[1]
		case "dep":
			last = fields[1] + "@" + fields[2]
			in.deps[last] = true
		case "=>":
			delete(in.deps, last)
			in.deps[fields[1]+"@"+fields[2]] = true
		case "build":
			key, value, _ := strings.Cut(fields[1], "=")
			in.settings[key] = strings.Trim(value, `"`)
		}
	}
	if in.main == "" || len(in.deps) == 0 {
		t.Fatalf("go version -m %s reports no main module or no dependency:\n%s", bin, out)
	}
	return in
}

// TestSBOM: each binary's SBOM is CycloneDX, describes the binary's main module at the
// release's version, and lists exactly the modules `go version -m` reports for it.
func TestSBOM(t *testing.T) {
	dist, v := distDir(t), version(t)
	for _, p := range platforms {
		t.Run(p.os+"/"+p.arch, func(t *testing.T) {
			bin := binary(dist, v, p.os, p.arch)
			want := buildInfo(t, bin)
			var bom struct {
				BOMFormat string `json:"bomFormat"`
				Metadata  struct {
					Component component `json:"component"`
				} `json:"metadata"`
				Components []component `json:"components"`
			}
			raw, err := os.ReadFile(bin + ".cdx.json")
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &bom); err != nil {
				t.Fatal(err)
			}
			if bom.BOMFormat != "CycloneDX" {
				t.Errorf("bomFormat %q", bom.BOMFormat)
			}
			if m := bom.Metadata.Component; m.Name != want.main || m.Version != v {
				t.Errorf("the SBOM describes %s@%s, want %s@%s", m.Name, m.Version, want.main, v)
			}
			got := map[string]bool{}
			for _, c := range bom.Components {
				got[c.Name+"@"+c.Version] = true
				if purl := "pkg:golang/" + c.Name + "@" + c.Version; !strings.HasPrefix(c.PURL, purl) {
					t.Errorf("component %s@%s: purl %q", c.Name, c.Version, c.PURL)
				}
			}
			for m := range want.deps {
				if !got[m] {
					t.Errorf("go version -m reports %s; the SBOM does not list it", m)
				}
			}
			for m := range got {
				if !want.deps[m] {
					t.Errorf("the SBOM lists %s; go version -m does not report it", m)
				}
			}
			t.Logf("%d modules", len(got))
		})
	}
}

type component struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	PURL    string `json:"purl"`
}
