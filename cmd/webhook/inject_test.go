package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/emissary-istio/emissary-istio-webhook/test/golden"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
)

// defaultNS is the namespace `webhook inject` decides documents without one in when neither
// -n nor a kubeconfig says otherwise.
var defaultNS = streamNamespace{name: "default"}

// TestInjectStream: `webhook inject` on a mixed stream, with mesh status from a Namespace
// document in the stream and from --meshed-namespaces. Golden: testdata/stream.golden.yaml
// (stdout) and testdata/stream.golden.txt (stderr).
func TestInjectStream(t *testing.T) {
	cases := []struct {
		name   string
		meshed []string
	}{
		{"stream", nil},
		{"stream-meshed-default", []string{"default"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in, err := os.Open(filepath.Join("testdata", "stream.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			var out, diag bytes.Buffer
			if err := injectStream(context.Background(), in, &out, &diag, inject.DefaultConfig(), defaultNS, c.meshed, nil); err != nil {
				t.Fatal(err)
			}
			golden.Assert(t, filepath.Join("testdata", c.name+".golden.yaml"), out.Bytes())
			golden.Assert(t, filepath.Join("testdata", c.name+".golden.txt"), diag.Bytes())
			if !strings.Contains(out.String(), "  # a comment that must survive\n") {
				t.Error("an untouched document was rewritten")
			}
		})
	}
}

// TestInjectStreamErrors: bad input is a clear error naming the document, never a panic.
func TestInjectStreamErrors(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"not YAML", "a: [", "document 1 is not valid YAML"},
		{"unknown Deployment field", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicaz: 1\n", `document 1 (apps/v1 Deployment): error unmarshaling JSON: while decoding JSON: json: unknown field "replicaz"`},
		{"second document broken", "apiVersion: v1\nkind: ConfigMap\n---\nkind: [\n", "document 2 is not valid YAML"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, diag bytes.Buffer
			err := injectStream(context.Background(), strings.NewReader(c.in), &out, &diag, inject.DefaultConfig(), defaultNS, nil, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestInjectMatchesSeed: `webhook inject` on the seed's Deployment without its istio-proxy
// gives the seed's hand-written integration back, but for the documented deviations, each
// applied to the seed below: istiod instead of the removed istio-pilot, a real proxyv2 image
// for {{ISTIO_VERSION}}, proxy resources from the config, the status annotation, and the
// proxy's command line as the configured Istio release reads it (pkg/inject/agent.go). With
// Istio 1.5, the release the seed was written for, the command line is the seed's own.
func TestInjectMatchesSeed(t *testing.T) {
	seedFlags := []string{"--discoveryAddress", "istiod.istio-system.svc:15012", "--connectTimeout", "10s",
		"--statusPort", "15020", "--trust-domain=cluster.local", "--controlPlaneBootstrap=false"}
	for _, tc := range []struct {
		istioVersion string
		deviate      func(proxy *corev1.Container)
	}{
		{"1.5.10", func(*corev1.Container) {}},
		{inject.DefaultIstioVersion, func(proxy *corev1.Container) {
			// Dead since Istio 1.6 (1.8 for --trust-domain, 1.12 for --serviceCluster): their
			// settings move to the env that replaced them.
			proxy.Args = slices.DeleteFunc(proxy.Args, func(a string) bool {
				return slices.Contains(seedFlags, a) || a == "--serviceCluster" || a == "istio-proxy-ambassador"
			})
			proxy.Env = append(proxy.Env,
				corev1.EnvVar{Name: "PROXY_CONFIG", Value: `{"discoveryAddress":"istiod.istio-system.svc:15012"}`},
				corev1.EnvVar{Name: "TRUST_DOMAIN", Value: "cluster.local"})
		}},
	} {
		t.Run("istio "+tc.istioVersion, func(t *testing.T) {
			cfg, err := inject.ParseConfig([]byte("apiVersion: " + inject.ConfigAPIVersion + "\nkind: " + inject.ConfigKind + "\nistioVersion: " + tc.istioVersion + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			got, seed := injectSeed(t, cfg)

			// The documented deviations, applied to the seed.
			seed.Spec.Template.Spec.Containers[0].Image = got.Spec.Template.Spec.Containers[0].Image // $version$
			proxy := &seed.Spec.Template.Spec.Containers[1]
			proxy.Image = cfg.Image()
			for i, a := range proxy.Args {
				if a == "istio-pilot.istio-system.svc:15012" {
					proxy.Args[i] = "istiod.istio-system.svc:15012"
				}
			}
			proxy.Resources = cfg.ProxyResources
			tc.deviate(proxy)
			seed.Spec.Template.Annotations[inject.AnnotationStatus] = got.Spec.Template.Annotations[inject.AnnotationStatus]

			if !equality.Semantic.DeepEqual(byName(got.Spec.Template.Spec.Containers), byName(seed.Spec.Template.Spec.Containers)) {
				t.Errorf("containers differ from the seed's:\ngot:  %+v\nseed: %+v", got.Spec.Template.Spec.Containers, seed.Spec.Template.Spec.Containers)
			}
			if !equality.Semantic.DeepEqual(volumesByName(got.Spec.Template.Spec.Volumes), volumesByName(seed.Spec.Template.Spec.Volumes)) {
				t.Errorf("volumes differ from the seed's:\ngot:  %+v\nseed: %+v", got.Spec.Template.Spec.Volumes, seed.Spec.Template.Spec.Volumes)
			}
			if !equality.Semantic.DeepEqual(got.Spec.Template.Annotations, seed.Spec.Template.Annotations) {
				t.Errorf("annotations %v, seed %v", got.Spec.Template.Annotations, seed.Spec.Template.Annotations)
			}
		})
	}
}

// injectSeed runs `webhook inject` with cfg on the seed's Deployment without its istio-proxy,
// and returns the result and the seed's own hand-written integration.
func injectSeed(t *testing.T, cfg *inject.Config) (got, seed appsv1.Deployment) {
	t.Helper()
	repo := filepath.Join("..", "..")
	in, err := os.Open(filepath.Join(repo, "test", "envtest", "testdata", "emissary-deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var out, diag bytes.Buffer
	if err := injectStream(context.Background(), in, &out, &diag, cfg, defaultNS, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(repo, "pkg", "inject", "testdata", "seed-hand-written.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(bytes.TrimPrefix(raw[bytes.Index(raw, []byte("---")):], []byte("---")), &seed); err != nil {
		t.Fatal(err)
	}
	return got, seed
}

func byName(cs []corev1.Container) map[string]corev1.Container {
	m := map[string]corev1.Container{}
	for _, c := range cs {
		m[c.Name] = c
	}
	return m
}

func volumesByName(vs []corev1.Volume) map[string]corev1.Volume {
	m := map[string]corev1.Volume{}
	for _, v := range vs {
		m[v.Name] = v
	}
	return m
}

// TestInjectPrintsUserVolumesAsWritten: a user's own istiod-ca-cert volume (the seed's,
// without the defaultMode the API server would add) is printed as the user wrote it.
func TestInjectPrintsUserVolumesAsWritten(t *testing.T) {
	const in = `apiVersion: apps/v1
kind: Deployment
metadata: {name: emissary, namespace: emissary}
spec:
  selector: {matchLabels: {app: emissary}}
  template:
    metadata: {labels: {app: emissary}}
    spec:
      containers:
      - {name: ambassador, image: docker.io/emissaryingress/emissary:3.10.0}
      volumes:
      - name: istiod-ca-cert
        configMap: {name: istio-ca-root-cert}
`
	var out, diag bytes.Buffer
	if err := injectStream(context.Background(), strings.NewReader(in), &out, &diag, inject.DefaultConfig(), defaultNS, nil, nil); err != nil {
		t.Fatal(err)
	}
	var got appsv1.Deployment
	if err := yaml.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Spec.Template.Spec.Containers) != 2 {
		t.Fatalf("not injected:\n%s", out.String())
	}
	if v := volumesByName(got.Spec.Template.Spec.Volumes)["istiod-ca-cert"]; v.ConfigMap == nil || v.ConfigMap.DefaultMode != nil {
		t.Errorf("the user's istiod-ca-cert volume was rewritten:\n%s", out.String())
	}
}

// TestInjectNamespace: -n is kubectl's: documents without a namespace are decided in it and
// printed without one; a document in another namespace than an explicit -n is an error;
// without -n they are decided in "default".
func TestInjectNamespace(t *testing.T) {
	const quote = "apiVersion: getambassador.io/v2\nkind: Mapping\nmetadata:\n  name: quote\nspec:\n  prefix: /q/\n  service: quote\n"
	run := func(in string, ns streamNamespace, meshed ...string) (string, error) {
		var out, diag bytes.Buffer
		err := injectStream(context.Background(), strings.NewReader(in), &out, &diag, inject.DefaultConfig(), ns, meshed, nil)
		return out.String(), err
	}
	for _, c := range []struct {
		name    string
		in      string
		ns      streamNamespace
		meshed  string
		want    string // a part of the output
		wantErr string
	}{
		{"decided in -n", quote, streamNamespace{"edge", true}, "edge", "service: quote:80", ""},
		{"not meshed there", quote, streamNamespace{"other", true}, "edge", "service: quote\n", ""},
		{"default", quote, defaultNS, "default", "tls: istio-upstream", ""},
		{"its own namespace without -n", strings.Replace(quote, "name: quote\n", "name: quote\n  namespace: edge\n", 1), defaultNS, "edge", "namespace: edge", ""},
		{"another namespace than -n", strings.Replace(quote, "name: quote\n", "name: quote\n  namespace: edge\n", 1), streamNamespace{"other", true}, "edge", "", `the namespace from the provided object "edge" does not match the namespace "other"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := run(c.in, c.ns, c.meshed)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(out, c.want) {
				t.Fatalf("output %q (%v), want one with %q", out, err, c.want)
			}
			if !strings.Contains(c.in, "namespace:") && strings.Contains(out, "namespace:") {
				t.Errorf("a namespace was added to the output:\n%s", out)
			}
		})
	}
}
