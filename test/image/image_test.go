// Package image tests the container image `make image` builds (bin/image/): it is the
// Dockerfile's image, it runs as the Dockerfile says, and it carries the one version that the
// binary, the kustomize manifests and the Helm chart also carry.
package image

import (
	"archive/tar"
	"bufio"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
)

// platforms are the Makefile's IMAGE_PLATFORMS.
var platforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

// release is what the Makefile says the release is.
type release struct {
	version, repository string
}

// makefileRelease reads VERSION and IMAGE from the Makefile, the one place they are set.
func makefileRelease(t *testing.T) release {
	t.Helper()
	vars := map[string]string{}
	f, err := os.Open(filepath.Join(envtest.RepoRoot(), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	assign := regexp.MustCompile(`^(VERSION|IMAGE)\s*[:?]?=\s*(\S+)\s*$`)
	for s := bufio.NewScanner(f); s.Scan(); {
		if m := assign.FindStringSubmatch(s.Text()); m != nil {
			vars[m[1]] = m[2]
		}
	}
	if vars["VERSION"] == "" || vars["IMAGE"] == "" {
		t.Fatalf("the Makefile sets no VERSION or IMAGE: %v", vars)
	}
	return release{version: vars["VERSION"], repository: vars["IMAGE"]}
}

// archive is the path of one of `make image`'s archives.
func archive(t *testing.T, r release, suffix string) string {
	t.Helper()
	file := filepath.Join(envtest.RepoRoot(), "bin", "image", path.Base(r.repository)+suffix)
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("%v: run `make image` (`make test` does)", err)
	}
	return file
}

// TestVersionAgrees: the Makefile's VERSION is the image's tag, manifests/base's images:
// newTag and the chart's appVersion (and, without the v, its version); IMAGE is the
// repository both install.
func TestVersionAgrees(t *testing.T) {
	r := makefileRelease(t)
	root := envtest.RepoRoot()

	var kustomization struct {
		Images []struct{ Name, NewName, NewTag string } `json:"images"`
	}
	readYAML(t, filepath.Join(root, "manifests", "base", "kustomization.yaml"), &kustomization)
	if len(kustomization.Images) != 1 || kustomization.Images[0].NewName != r.repository || kustomization.Images[0].NewTag != r.version {
		t.Errorf("manifests/base images: %+v, want %s:%s", kustomization.Images, r.repository, r.version)
	}

	var chart struct{ Version, AppVersion string }
	readYAML(t, filepath.Join(root, "charts", "emissary-istio-webhook", "Chart.yaml"), &chart)
	if chart.AppVersion != r.version || "v"+chart.Version != r.version {
		t.Errorf("Chart.yaml version %q, appVersion %q; want %q and %q", chart.Version, chart.AppVersion, strings.TrimPrefix(r.version, "v"), r.version)
	}
	var values struct {
		Image struct{ Repository, Tag string } `json:"image"`
	}
	readYAML(t, filepath.Join(root, "charts", "emissary-istio-webhook", "values.yaml"), &values)
	if values.Image.Repository != r.repository || values.Image.Tag != "" {
		t.Errorf("chart image %+v, want repository %s and the appVersion as tag", values.Image, r.repository)
	}
}

// TestImage opens each platform's docker-save archive: the image is tagged with the release,
// its configuration is the Dockerfile's, and its one file is a static binary for the
// platform. The host's platform is unpacked and its entrypoint run as the image's user,
// chrooted into the image's root: `version` prints the release.
func TestImage(t *testing.T) {
	r := makefileRelease(t)
	tag, err := name.NewTag(r.repository + ":" + r.version)
	if err != nil {
		t.Fatal(err)
	}
	want := dockerfileStage(t, r)
	for _, p := range platforms {
		t.Run(p.String(), func(t *testing.T) {
			img, err := tarball.ImageFromPath(archive(t, r, "-"+p.OS+"-"+p.Architecture+".tar"), &tag)
			if err != nil {
				t.Fatalf("the archive has no image %s: %v", tag, err)
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.OS != p.OS || cfg.Architecture != p.Architecture {
				t.Errorf("image platform %s/%s, want %s", cfg.OS, cfg.Architecture, p)
			}
			checkConfig(t, cfg.Config, want)

			root := unpack(t, img)
			entries, _ := os.ReadDir(root)
			if len(entries) != 1 || entries[0].Name() != path.Base(want.Entrypoint[0]) {
				t.Errorf("the image's root holds %v, want only the binary", entries)
			}
			bin := filepath.Join(root, want.Entrypoint[0])
			checkStaticELF(t, bin, p.Architecture)

			if p.OS != runtime.GOOS || p.Architecture != runtime.GOARCH {
				return // no emulator here: the ELF check above is what this platform gets
			}
			out := runAsImageUser(t, root, cfg.Config.User, append(slices.Clone(cfg.Config.Entrypoint), "version")...)
			if got := strings.TrimSpace(out); got != r.version {
				t.Errorf("`webhook version` in the image prints %q, want %q", got, r.version)
			}
		})
	}
}

// TestOCIArchive: the OCI archive's index.json names the release and holds one index with
// both platforms, whose images are the docker-save archives' images (same config, same
// layers).
func TestOCIArchive(t *testing.T) {
	r := makefileRelease(t)
	dir := t.TempDir()
	untar(t, archive(t, r, ".oci.tar"), dir)
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("not an OCI image layout: %v", err)
	}
	topManifest, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(topManifest.Manifests) != 1 {
		t.Fatalf("index.json lists %d entries, want the one multi-platform index", len(topManifest.Manifests))
	}
	d := topManifest.Manifests[0]
	if got := d.Annotations["io.containerd.image.name"]; got != r.repository+":"+r.version {
		t.Errorf("io.containerd.image.name = %q", got)
	}
	if got := d.Annotations["org.opencontainers.image.ref.name"]; got != r.version {
		t.Errorf("org.opencontainers.image.ref.name = %q", got)
	}
	index, err := top.ImageIndex(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range im.Manifests {
		p := *m.Platform
		got = append(got, p.String())
		img, err := index.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		docker, err := tarball.ImageFromPath(archive(t, r, "-"+p.OS+"-"+p.Architecture+".tar"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := contentOf(t, img), contentOf(t, docker); a != b {
			t.Errorf("%s: the OCI archive's image (%s) is not the docker archive's (%s)", p, a, b)
		}
	}
	var wantPlatforms []string
	for _, p := range platforms {
		wantPlatforms = append(wantPlatforms, p.String())
	}
	if !slices.Equal(got, wantPlatforms) {
		t.Errorf("index platforms %v, want %v", got, wantPlatforms)
	}
}

// TestDockerfileCopiesEveryPackage: the Dockerfile's build stage copies cmd/, pkg/ and
// certs/; every package of this module that the binary imports must be under one of them,
// or `docker build` fails where `make image` succeeds.
func TestDockerfileCopiesEveryPackage(t *testing.T) {
	root := envtest.RepoRoot()
	raw, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	copied := regexp.MustCompile(`(?m)^COPY (\w+)/ `).FindAllStringSubmatch(string(raw), -1)
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "./cmd/webhook")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for dir := range strings.FieldsSeq(string(out)) {
		rel, err := filepath.Rel(root, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // another module's package
		}
		top, _, _ := strings.Cut(filepath.ToSlash(rel), "/")
		if !slices.ContainsFunc(copied, func(m []string) bool { return m[1] == top }) {
			t.Errorf("the binary imports %s, but the Dockerfile does not COPY %s/", rel, top)
		}
	}
}

// stage is what the Dockerfile's final stage sets.
type stage struct {
	From       string
	User       string
	Entrypoint []string
	Labels     map[string]string
	Ports      []string
}

// dockerfileStage reads the final stage of the Dockerfile (line continuations joined; ARGs
// VERSION and REVISION expanded to what `make image` passes).
func dockerfileStage(t *testing.T, r release) stage {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(envtest.RepoRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(raw), "\\\n", " ")
	revision := gitRevision(t)
	expand := strings.NewReplacer("${VERSION}", r.version, "${REVISION}", revision)
	var s stage
	for line := range strings.SplitSeq(text, "\n") {
		instr, args, _ := strings.Cut(strings.TrimSpace(line), " ")
		args = strings.TrimSpace(args)
		switch instr {
		case "FROM":
			s = stage{From: args, Labels: map[string]string{}}
		case "USER":
			s.User = args
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(args), &s.Entrypoint); err != nil {
				t.Fatalf("ENTRYPOINT %s is not the exec (JSON) form: %v", args, err)
			}
		case "EXPOSE":
			s.Ports = strings.Fields(args)
		case "LABEL":
			for _, m := range regexp.MustCompile(`([\w.-]+)="([^"]*)"`).FindAllStringSubmatch(args, -1) {
				s.Labels[m[1]] = expand.Replace(m[2])
			}
		}
	}
	if s.From != "scratch" || s.User == "" || len(s.Entrypoint) == 0 || len(s.Labels) == 0 {
		t.Fatalf("the Dockerfile's final stage is not FROM scratch with USER, ENTRYPOINT and LABEL: %+v", s)
	}
	return s
}

// checkConfig compares an image configuration with the Dockerfile's final stage.
func checkConfig(t *testing.T, got v1.Config, want stage) {
	t.Helper()
	if got.User != want.User || !slices.Equal(got.Entrypoint, want.Entrypoint) || len(got.Cmd) != 0 {
		t.Errorf("user %q, entrypoint %q, cmd %q; the Dockerfile says user %q, entrypoint %q, no cmd",
			got.User, got.Entrypoint, got.Cmd, want.User, want.Entrypoint)
	}
	uid, gid, ok := strings.Cut(got.User, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 || !ok || gid == "" {
		t.Errorf("user %q is not a numeric non-root uid:gid (Pod Security restricted needs runAsNonRoot)", got.User)
	}
	// The revision first: after a commit, an archive built before it is stale, not wrong.
	const revision = "org.opencontainers.image.revision"
	if got.Labels[revision] != want.Labels[revision] {
		t.Fatalf("the image was built from commit %q, this checkout is %q: run `make image`", got.Labels[revision], want.Labels[revision])
	}
	if fmt.Sprint(got.Labels) != fmt.Sprint(want.Labels) {
		t.Errorf("labels\n got %v\nwant %v (the Dockerfile's)", got.Labels, want.Labels)
	}
	var ports []string
	for p := range got.ExposedPorts {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	if !slices.Equal(ports, slices.Sorted(slices.Values(want.Ports))) {
		t.Errorf("exposed ports %v, the Dockerfile's %v", ports, want.Ports)
	}
	for _, key := range []string{"org.opencontainers.image.version", "org.opencontainers.image.source", "org.opencontainers.image.revision"} {
		if got.Labels[key] == "" {
			t.Errorf("label %s is empty", key)
		}
	}
}

// gitRevision is the commit `make image` labels the image with.
func gitRevision(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("git", "rev-parse", "HEAD")
	cmd.Dir = envtest.RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		// Fail rather than skip: a skip passes quietly (as root in another user's checkout,
		// git refuses to run without safe.directory; the CI workflow sets it).
		t.Fatalf("git rev-parse HEAD: %v: the revision label cannot be checked", err)
	}
	return strings.TrimSpace(string(out))
}

// unpack writes the image's flattened filesystem (mutate.Extract) into a new directory, as a
// container runtime prepares a root: the root directory itself 0755.
func unpack(t *testing.T, img v1.Image) string {
	t.Helper()
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	if err := extractTar(rc, root); err != nil {
		t.Fatal(err)
	}
	return root
}

func untar(t *testing.T, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := extractTar(f, dir); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// extractTar writes directories and regular files of a tar stream under dir, keeping their
// modes; anything else (links, devices) or a path leaving dir is an error: neither archive
// has any.
func extractTar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if !filepath.IsLocal(hdr.Name) {
			return fmt.Errorf("tar entry %q leaves the directory", hdr.Name)
		}
		target := filepath.Join(dir, hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, hdr.FileInfo().Mode().Perm()); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, hdr.FileInfo().Mode().Perm())
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("tar entry %q has type %c", hdr.Name, hdr.Typeflag)
		}
	}
}

// checkStaticELF: the binary is for arch and needs no dynamic loader or library, which a
// FROM scratch image does not have.
func checkStaticELF(t *testing.T, file, arch string) {
	t.Helper()
	f, err := elf.Open(file)
	if err != nil {
		t.Fatalf("the entrypoint is not an ELF binary: %v", err)
	}
	defer f.Close()
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	if f.Machine != machine {
		t.Errorf("ELF machine %v, want %v for %s", f.Machine, machine, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary asks for a dynamic loader (PT_INTERP): it was not built with CGO_ENABLED=0")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}
}

// runAsImageUser runs argv (a path inside root first) chrooted into root as the image's
// numeric uid:gid, with an empty environment: a container without the container. That needs
// root (chroot, setuid): without it the test fails and says so, since a skip or a run as
// another user would pass without checking what the image's user can do.
func runAsImageUser(t *testing.T, root, user string, argv ...string) string {
	t.Helper()
	uidStr, gidStr, _ := strings.Cut(user, ":")
	uid, err1 := strconv.ParseUint(uidStr, 10, 32)
	gid, err2 := strconv.ParseUint(gidStr, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("user %q: %v", user, err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("running %v as the image's user %s in its root needs root (chroot and setuid); "+
			"this runs as uid %d: run `make test` as root (sudo -E env PATH=$PATH make test)", argv, user, os.Geteuid())
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     root,
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)},
	}
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%v as %s in the image's root: %v\n%s", argv, user, err, stderr)
	}
	return string(out)
}

// contentOf identifies an image by what it holds rather than by its manifest, whose media
// type differs between a docker-save and an OCI archive: the config digest and layer digests.
func contentOf(t *testing.T, img v1.Image) string {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	s := "config " + cfg.String()
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		s += " layer " + d.String()
	}
	return s
}

func readYAML(t *testing.T, file string, into any) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, into); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}
