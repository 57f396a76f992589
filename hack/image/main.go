// Command image assembles the webhook's container image from binaries that `make image`
// cross-compiled, with go-containerregistry and without a container engine or a registry. The
// image is the Dockerfile's final stage: FROM scratch, the static binary as /webhook, USER
// 65532:65532, ENTRYPOINT ["/webhook"], the OCI labels (test/image checks that the two agree).
//
// It writes into -out, for a repository ghcr.io/org/NAME:
//
//	NAME-<os>-<arch>.tar  one docker-save archive per platform, tagged <repository>:<version>
//	NAME.oci.tar          an OCI image layout whose index.json names a multi-platform index
//
// Every timestamp is -created (SOURCE_DATE_EPOCH), so a rebuild from the same commit gives
// the same image digests.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// What the Dockerfile's final stage says.
const (
	entrypoint = "/webhook"
	user       = "65532:65532" // distroless' "nonroot"; the manifests run as it too
	license    = "Apache-2.0"  // SPDX identifier of the project's licence
)

// Ports the webhook listens on, as the Dockerfile EXPOSEs them: HTTPS, metrics, probes.
var exposedPorts = []string{"9443/tcp", "8080/tcp", "8081/tcp"}

type options struct {
	out, repository, version, source, revision string
	created                                    time.Time
	binaries                                   []platformBinary
}

type platformBinary struct {
	platform v1.Platform
	path     string
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	tag, err := name.NewTag(o.repository + ":" + o.version)
	if err != nil {
		return fmt.Errorf("-repository and -version do not make an image reference: %w", err)
	}
	base := path.Base(tag.RepositoryStr())

	var addenda []mutate.IndexAddendum
	for _, b := range o.binaries {
		img, err := build(o, b)
		if err != nil {
			return fmt.Errorf("%s: %w", b.path, err)
		}
		file := filepath.Join(o.out, fmt.Sprintf("%s-%s-%s.tar", base, b.platform.OS, b.platform.Architecture))
		if err := tarball.WriteToFile(file, tag, img); err != nil {
			return err
		}
		digest, _ := img.Digest()
		fmt.Printf("%s  %s/%s  %s\n", file, b.platform.OS, b.platform.Architecture, digest)
		addenda = append(addenda, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &b.platform},
		})
	}

	index := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), addenda...)
	file := filepath.Join(o.out, base+".oci.tar")
	if err := writeOCIArchive(file, index, tag, o.created); err != nil {
		return err
	}
	digest, _ := index.Digest()
	fmt.Printf("%s  index  %s\n", file, digest)
	return nil
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	var created int64
	var binaries []string
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.StringVar(&o.out, "out", "bin/image", "directory the archives are written to")
	fs.StringVar(&o.repository, "repository", "", "image repository, e.g. ghcr.io/emissary-istio/emissary-istio-webhook")
	fs.StringVar(&o.version, "version", "", "image tag and org.opencontainers.image.version")
	fs.StringVar(&o.source, "source", "", "org.opencontainers.image.source")
	fs.StringVar(&o.revision, "revision", "", "org.opencontainers.image.revision (the commit)")
	fs.Int64Var(&created, "created", 0, "creation time, Unix seconds (SOURCE_DATE_EPOCH)")
	fs.Func("binary", "OS/ARCH=PATH of a static webhook binary; repeat per platform", func(v string) error {
		binaries = append(binaries, v)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.repository == "" || o.version == "" || o.source == "" || len(binaries) == 0 {
		return nil, errors.New("-repository, -version, -source and at least one -binary are required")
	}
	o.created = time.Unix(created, 0).UTC()
	for _, b := range binaries {
		plat, file, ok := strings.Cut(b, "=")
		if !ok {
			return nil, fmt.Errorf("-binary %q: want OS/ARCH=PATH", b)
		}
		p, err := v1.ParsePlatform(plat)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("-binary %q: %q is not OS/ARCH", b, plat)
		}
		o.binaries = append(o.binaries, platformBinary{platform: *p, path: file})
	}
	return o, nil
}

// build is the Dockerfile's final stage for one platform.
func build(o *options, b platformBinary) (v1.Image, error) {
	layer, err := binaryLayer(b.path, o.created)
	if err != nil {
		return nil, err
	}
	labels := map[string]string{
		"org.opencontainers.image.title":       "emissary-istio-webhook",
		"org.opencontainers.image.description": "Mutating admission webhook that integrates Emissary-ingress with Istio",
		"org.opencontainers.image.version":     o.version,
		"org.opencontainers.image.source":      o.source,
		"org.opencontainers.image.url":         o.source,
		"org.opencontainers.image.revision":    o.revision,
		"org.opencontainers.image.licenses":    license,
	}
	ports := map[string]struct{}{}
	for _, p := range exposedPorts {
		ports[p] = struct{}{}
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: b.platform.Architecture,
		OS:           b.platform.OS,
		Variant:      b.platform.Variant,
		Config: v1.Config{
			User:         user,
			Entrypoint:   []string{entrypoint},
			WorkingDir:   "/",
			Labels:       labels,
			ExposedPorts: ports,
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: o.created},
			CreatedBy: "COPY webhook " + entrypoint + " # hack/image",
		},
	})
	if err != nil {
		return nil, err
	}
	return mutate.CreatedAt(img, v1.Time{Time: o.created})
}

// binaryLayer is a layer holding one file, the binary at /webhook: root-owned, mode 0755.
func binaryLayer(file string, mtime time.Time) (v1.Layer, error) {
	bin, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     strings.TrimPrefix(entrypoint, "/"),
		Mode:     0o755,
		Size:     int64(len(bin)),
		ModTime:  mtime,
		Format:   tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerTar := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// writeOCIArchive writes index as an OCI image layout (index.json names it, with the
// annotations containerd and Docker read the image's name from) and tars the layout up.
func writeOCIArchive(file string, index v1.ImageIndex, tag name.Tag, mtime time.Time) error {
	dir, err := os.MkdirTemp("", "oci-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(index, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
		"io.containerd.image.name":          tag.Name(),
	})); err != nil {
		return err
	}
	return tarDir(file, dir, mtime)
}

// tarDir writes the regular files under dir into a tar at file, in lexical order, with fixed
// owners and times, so the archive depends only on the content.
func tarDir(file, dir string, mtime time.Time) (err error) {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Format: tar.FormatPAX}
		if d.IsDir() {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
			return tw.WriteHeader(hdr)
		}
		content, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, int64(len(content))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = tw.Write(content)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
