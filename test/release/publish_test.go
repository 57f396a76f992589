package release

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/emissary-istio/emissary-istio-webhook/test/envtest"
)

// TestPublish runs `make publish`, as the release workflow does, against a registry on
// loopback (go-containerregistry's, in this process, plain HTTP): the image index it
// reports is the OCI archive's, and every manifest and blob of the archive comes back by
// digest with the same bytes; the chart it reports comes back through `helm pull` by digest
// as the same .tgz, stored with helm's media types and the licence annotation. The pulls
// speak the registry's HTTP API (OCI distribution) directly.
func TestPublish(t *testing.T) {
	dist, v := distDir(t), version(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	reg := distribution{base: srv.URL}

	runMake(t, "publish", "PUBLISH_IMAGE="+host+"/emissary-istio/"+name, "CHART_REPO=oci://"+host+"/charts", "PLAIN_HTTP=1")
	refs := readRefs(t, filepath.Join(envtest.RepoRoot(), "bin", "publish", "refs"))

	t.Run("image", func(t *testing.T) {
		layout := t.TempDir()
		untar(t, filepath.Join(dist, name+".oci.tar"), layout)
		var index v1.IndexManifest
		readJSON(t, filepath.Join(layout, "index.json"), &index)
		if len(index.Manifests) != 1 {
			t.Fatalf("the OCI archive's index.json lists %d entries", len(index.Manifests))
		}
		top := index.Manifests[0]

		repo := "emissary-istio/" + name
		if want := host + "/" + repo + "@" + top.Digest.String(); refs["image"] != want {
			t.Fatalf("make publish reports %s, want %s", refs["image"], want)
		}
		if tagged := reg.get(t, repo, "manifests", v); digestOf(tagged) != top.Digest {
			t.Errorf("the tag %s is %s, want %s", v, digestOf(tagged), top.Digest)
		}
		blobs := map[v1.Hash]bool{}
		reg.pullSame(t, repo, layout, top, blobs)
		files, _ := os.ReadDir(filepath.Join(layout, "blobs", "sha256"))
		if len(blobs) != len(files) {
			t.Errorf("pulled back %d of the archive's %d blobs", len(blobs), len(files))
		}
		t.Logf("%s: %d manifests and blobs pulled back by digest, byte for byte", refs["image"], len(blobs))
	})

	t.Run("chart", func(t *testing.T) {
		repo := "charts/" + name
		ref, digest, _ := strings.Cut(refs["chart"], "@")
		if ref != host+"/"+repo || !strings.HasPrefix(digest, "sha256:") {
			t.Fatalf("make publish reports the chart at %s, want %s/%s@sha256:...", refs["chart"], host, repo)
		}
		m, err := v1.ParseManifest(bytes.NewReader(reg.get(t, repo, "manifests", digest)))
		if err != nil {
			t.Fatal(err)
		}
		if m.Config.MediaType != "application/vnd.cncf.helm.config.v1+json" || len(m.Layers) != 1 || m.Layers[0].MediaType != chartMime {
			t.Fatalf("the chart's manifest has config %s and layers %v, not helm's media types", m.Config.MediaType, m.Layers)
		}
		if got := m.Annotations["org.opencontainers.image.licenses"]; got != license {
			t.Errorf("the chart's manifest has licence annotation %q, want %s", got, license)
		}
		want, err := os.ReadFile(chartPackage(dist, v))
		if err != nil {
			t.Fatal(err)
		}
		if layer := reg.get(t, repo, "blobs", m.Layers[0].Digest.String()); !bytes.Equal(layer, want) {
			t.Errorf("the chart's layer (%d bytes) is not dist's package (%d bytes)", len(layer), len(want))
		}

		// What users run.
		dir := t.TempDir()
		if _, err := envtest.Helm(t.TempDir(), nil, "pull", "oci://"+refs["chart"], "--plain-http", "--destination", dir); err != nil {
			t.Fatal(err)
		}
		// helm names what it pulled by digest <name>@sha256-<hex>.tgz.
		pulled, err := filepath.Glob(filepath.Join(dir, "*.tgz"))
		if err != nil || len(pulled) != 1 {
			t.Fatalf("helm pull by digest wrote %v (%v), want one .tgz", pulled, err)
		}
		got, err := os.ReadFile(pulled[0])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("helm pull %s gives %d bytes that are not dist's %d", refs["chart"], len(got), len(want))
		}
	})
}

// distribution is a client of a registry's HTTP API, enough to pull by digest.
type distribution struct{ base string }

// get fetches /v2/<repo>/<kind>/<reference> (kind: manifests or blobs), accepting the OCI and
// Docker manifest types.
func (r distribution) get(t *testing.T, repo, kind, reference string) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.base+"/v2/"+repo+"/"+kind+"/"+reference, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", strings.Join([]string{string(types.OCIImageIndex), string(types.OCIManifestSchema1),
		string(types.DockerManifestList), string(types.DockerManifestSchema2)}, ", "))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", req.URL, resp.Status, body)
	}
	return body
}

// pullSame fetches the manifest d names by digest and compares it with the layout's blob,
// then does the same for what it references: the manifests of an index, the config and
// layers of an image. blobs collects every digest compared.
func (r distribution) pullSame(t *testing.T, repo, layout string, d v1.Descriptor, blobs map[v1.Hash]bool) {
	t.Helper()
	want := layoutBlob(t, layout, d.Digest)
	blobs[d.Digest] = true
	if got := r.get(t, repo, "manifests", d.Digest.String()); !bytes.Equal(got, want) {
		t.Fatalf("%s: the registry's manifest is not the archive's", d.Digest)
	}
	switch {
	case d.MediaType.IsIndex():
		im, err := v1.ParseIndexManifest(bytes.NewReader(want))
		if err != nil {
			t.Fatal(err)
		}
		for _, child := range im.Manifests {
			r.pullSame(t, repo, layout, child, blobs)
		}
	case d.MediaType.IsImage():
		m, err := v1.ParseManifest(bytes.NewReader(want))
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if got := r.get(t, repo, "blobs", b.Digest.String()); !bytes.Equal(got, layoutBlob(t, layout, b.Digest)) {
				t.Errorf("%s: the registry's blob is not the archive's", b.Digest)
			}
			blobs[b.Digest] = true
		}
	default:
		t.Fatalf("%s: media type %s", d.Digest, d.MediaType)
	}
}

func digestOf(raw []byte) v1.Hash {
	sum := sha256.Sum256(raw)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func layoutBlob(t *testing.T, layout string, h v1.Hash) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(layout, "blobs", h.Algorithm, h.Hex))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// readRefs reads make publish's KEY=VALUE lines.
func readRefs(t *testing.T, file string) map[string]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	refs := map[string]string{}
	for s := bufio.NewScanner(f); s.Scan(); {
		k, v, ok := strings.Cut(s.Text(), "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", file, s.Text())
		}
		refs[k] = v
	}
	if refs["image"] == "" || refs["chart"] == "" {
		t.Fatalf("%s has no image= or chart= line: %v", file, refs)
	}
	return refs
}

// imageRepository is the repository the OCI archive names its image by (the Makefile's
// IMAGE), from the annotation containerd reads.
func imageRepository(t *testing.T, dist string) string {
	t.Helper()
	dir := t.TempDir()
	untar(t, filepath.Join(dist, name+".oci.tar"), dir)
	var index v1.IndexManifest
	readJSON(t, filepath.Join(dir, "index.json"), &index)
	ref, ok := index.Manifests[0].Annotations["io.containerd.image.name"]
	if !ok {
		t.Fatal("the OCI archive's index.json has no io.containerd.image.name")
	}
	repo, _, _ := strings.Cut(ref, ":")
	return repo
}

func readJSON(t *testing.T, file string, into any) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, into); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// untar writes the regular files of a tar archive (the OCI layout `make image` writes: no
// links) under dir.
func untar(t *testing.T, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if !filepath.IsLocal(hdr.Name) {
			t.Fatalf("%s: entry %q leaves the directory", file, hdr.Name)
		}
		target := filepath.Join(dir, hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(target, 0o755)
		case tar.TypeReg:
			err = writeFile(target, tr)
		default:
			err = fmt.Errorf("entry %q has type %c", hdr.Name, hdr.Typeflag)
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
}

func writeFile(target string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.Create(target)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	return errors.Join(err, f.Close())
}
