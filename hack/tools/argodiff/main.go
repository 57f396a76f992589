// Command argodiff runs Argo CD's own diff (github.com/argoproj/gitops-engine/pkg/diff, the
// code Argo CD's application controller compares with) on manifests and the objects an API
// server stores, so the tests can show what Argo CD reports for the objects the webhook mutates.
//
//	argodiff -kubeconfig FILE [-compare-options OPTIONS] [-ignore-differences FILE] MANIFEST...
//
// By default it is Argo CD's default comparison: diff.Diff of the manifest against the live
// object read from the API server, with no normalizer beyond gitops-engine's own. That is a
// three-way diff when the live object carries kubectl's last-applied annotation (Argo CD's
// own sync applies with kubectl and leaves it), a two-way diff otherwise.
//
// -ignore-differences takes the ignoreDifferences list of an Argo CD Application (YAML or JSON,
// jsonPointers only) and normalizes both sides with it, as Argo CD's ignore normalizer does.
//
// -compare-options takes the value of an Application's argocd.argoproj.io/compare-options
// annotation; ServerSideDiff=true,IncludeMutationWebhook=true selects Argo CD's server-side diff
// with the mutation webhooks included (serverside.go).
//
// It writes one JSON verdict per object on stdout and exits 0 whenever it could compare:
// out of sync is a verdict, not a failure.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/argoproj/gitops-engine/pkg/diff"
	jsonpatch "github.com/evanphx/json-patch"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

type verdict struct {
	Object string `json:"object"`
	// Method is how Argo CD compared: three-way (the live object has kubectl's last-applied
	// annotation), two-way, or server-side.
	Method string `json:"method"`
	InSync bool   `json:"inSync"`
	// Diff is a JSON merge patch from the (normalized) live object to the one Argo CD
	// predicts from the manifest: what Argo CD shows as the difference.
	Diff json.RawMessage `json:"diff,omitempty"`
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster (required)")
	compareOptions := flag.String("compare-options", "", "an Application's argocd.argoproj.io/compare-options annotation, e.g. ServerSideDiff=true,IncludeMutationWebhook=true")
	ignoreFile := flag.String("ignore-differences", "", "file with an Application's spec.ignoreDifferences list (jsonPointers)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: argodiff -kubeconfig FILE [-compare-options OPTIONS] [-ignore-differences FILE] MANIFEST...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *kubeconfig == "" || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	serverSide, err := parseCompareOptions(*compareOptions)
	if err != nil {
		fmt.Fprintln(os.Stderr, "argodiff:", err)
		os.Exit(2)
	}
	if err := run(*kubeconfig, serverSide, *ignoreFile, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "argodiff:", err)
		os.Exit(1)
	}
}

func run(kubeconfig string, serverSide bool, ignoreFile string, files []string) error {
	normalizer := diff.GetNoopNormalizer()
	if ignoreFile != "" {
		b, err := os.ReadFile(ignoreFile)
		if err != nil {
			return err
		}
		if normalizer, err = newIgnoreNormalizer(b); err != nil {
			return fmt.Errorf("%s: %w", ignoreFile, err)
		}
	}
	cluster, err := connect(kubeconfig)
	if err != nil {
		return err
	}
	var configs []*unstructured.Unstructured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		objs, err := readObjects(b)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		configs = append(configs, objs...)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := []diff.Option{diff.WithNormalizer(normalizer), diff.IgnoreAggregatedRoles(false)}
	verdicts := make([]verdict, 0, len(configs))
	for _, config := range configs {
		res, err := cluster.resource(config)
		if err != nil {
			return err
		}
		live, err := res.Get(ctx, config.GetName(), metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading %s: %w", describe(config), err)
		}
		v := verdict{Object: describe(config)}
		var r *diff.DiffResult
		if serverSide {
			v.Method = "server-side"
			r, err = serverSideDiff(ctx, res, config, live, opts...)
		} else {
			v.Method = "two-way"
			if _, ok := live.GetAnnotations()["kubectl.kubernetes.io/last-applied-configuration"]; ok {
				v.Method = "three-way"
			}
			r, err = diff.Diff(config, live, opts...)
		}
		if err != nil {
			return fmt.Errorf("diffing %s: %w", describe(config), err)
		}
		v.InSync = !r.Modified
		if r.Modified {
			if v.Diff, err = jsonpatch.CreateMergePatch(r.NormalizedLive, r.PredictedLive); err != nil {
				return err
			}
		}
		verdicts = append(verdicts, v)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(verdicts)
}

// parseCompareOptions reads the compare-options annotation as Argo CD does (comma-separated
// Name=value) and says whether it selects the server-side diff with the mutation webhooks
// included. ServerSideDiff=true alone (webhook changes removed from the prediction, which
// needs the cluster's OpenAPI field types) is not implemented here, and is refused rather
// than answered with another comparison.
func parseCompareOptions(value string) (serverSide bool, err error) {
	if value == "" {
		return false, nil
	}
	opts := map[string]string{}
	for _, o := range strings.Split(value, ",") {
		name, v, ok := strings.Cut(strings.TrimSpace(o), "=")
		if !ok {
			return false, fmt.Errorf("compare option %q is not Name=value", o)
		}
		opts[name] = v
	}
	serverSide = opts["ServerSideDiff"] == "true"
	if serverSide && opts["IncludeMutationWebhook"] != "true" {
		return false, fmt.Errorf("compare options %q: ServerSideDiff=true without IncludeMutationWebhook=true is not implemented here", value)
	}
	return serverSide, nil
}

func describe(obj *unstructured.Unstructured) string {
	return obj.GetKind() + "/" + obj.GetNamespace() + "/" + obj.GetName()
}

func readObjects(b []byte) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var m map[string]interface{}
		if err := dec.Decode(&m); err == io.EOF {
			return objs, nil
		} else if err != nil {
			return nil, err
		}
		if len(m) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
}

// cluster finds the resource of a manifest's kind, as Argo CD's cluster cache does.
type cluster struct {
	dynamic dynamic.Interface
	mapper  meta.RESTMapper
}

func connect(kubeconfig string) (*cluster, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &cluster{dynamic: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

func (c *cluster) resource(obj *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	m, err := c.mapper.RESTMapping(schema.GroupKind{Group: gvk.Group, Kind: gvk.Kind}, gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", describe(obj), err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dynamic.Resource(m.Resource).Namespace(obj.GetNamespace()), nil
	}
	return c.dynamic.Resource(m.Resource), nil
}
