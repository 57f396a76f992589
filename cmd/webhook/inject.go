package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mapping"
)

func newInjectCommand() *cobra.Command {
	var (
		file, configPath, kubeconfig, namespace string
		meshed                                  []string
	)
	cmd := &cobra.Command{
		Use:   "inject -f FILE|-",
		Short: "Print a YAML stream as the webhook would make the cluster store it",
		Long: `inject reads a multi-document YAML stream and writes it back with every Emissary
Deployment, DaemonSet and bare Pod injected and every Mapping defaulted exactly as the
admission webhook would do it: it applies the very patch the webhook answers with. Other
documents are written back as they were read. What was done and why goes to stderr.

Documents without a namespace are decided in the namespace -n gives, as kubectl apply -n
would create them (by default the --kubeconfig context's namespace, else "default"); the
output leaves their namespace out, as the input did.

Whether a Mapping's upstream namespace is meshed comes from Namespace documents in the
stream, from --meshed-namespaces (which gives those namespaces labels that the configured
mapping.meshedNamespaceSelectors match), and from a live cluster with --kubeconfig.

  webhook inject -f emissary.yaml | kubectl apply -f -
  webhook inject -n default --meshed-namespaces default -f quote.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New(`inject: -f FILE is required ("-" reads standard input)`)
			}
			cfg, err := inject.LoadConfig(configPath)
			if err != nil {
				return err
			}
			in, closeIn, err := openInput(file, cmd.InOrStdin())
			if err != nil {
				return err
			}
			defer closeIn()
			ns := streamNamespace{name: namespace, explicit: cmd.Flags().Changed("namespace")}
			var live mapping.Namespaces
			if kubeconfig != "" {
				var contextNS string
				if live, contextNS, err = liveNamespaces(kubeconfig); err != nil {
					return err
				}
				if !ns.explicit {
					ns.name = contextNS
				}
			}
			if ns.name == "" {
				ns.name = "default"
			}
			return injectStream(cmd.Context(), in, cmd.OutOrStdout(), cmd.ErrOrStderr(), cfg, ns, meshed, live)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", `YAML file to read, "-" for standard input`)
	f.StringVarP(&namespace, "namespace", "n", "", `namespace of the documents that have none (default: the --kubeconfig context's, else "default")`)
	f.StringVar(&configPath, "config", "", "configuration file (defaults apply when empty)")
	f.StringSliceVar(&meshed, "meshed-namespaces", nil, "namespaces to treat as Istio-meshed (comma separated)")
	f.StringVar(&kubeconfig, "kubeconfig", "", "read namespace labels (and the default namespace) from this cluster")
	return cmd
}

// streamNamespace is the namespace of the documents that have none, as kubectl's -n:
// explicit when the flag was given, which makes a document in another namespace an error.
type streamNamespace struct {
	name     string
	explicit bool
}

func openInput(name string, stdin io.Reader) (io.Reader, func(), error) {
	if name == "-" {
		return stdin, func() {}, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, fmt.Errorf("inject: %w", err)
	}
	return f, func() { f.Close() }, nil
}

// liveNamespaces reads namespaces from the cluster of kubeconfig, and returns its current
// context's namespace ("" when it sets none).
func liveNamespaces(kubeconfig string) (mapping.Namespaces, string, error) {
	loading := clientcmd.NewDefaultClientConfigLoadingRules()
	loading.ExplicitPath = kubeconfig
	config := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loading, nil)
	restCfg, err := config.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("inject: kubeconfig %s: %w", kubeconfig, err)
	}
	c, err := client.New(restCfg, client.Options{})
	if err != nil {
		return nil, "", fmt.Errorf("inject: %w", err)
	}
	ns, _, err := config.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("inject: kubeconfig %s: %w", kubeconfig, err)
	}
	return apiNamespaces{c}, ns, nil
}

// document is one YAML document of the stream and what it says it is.
type document struct {
	raw        []byte
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// injectStream is `webhook inject`: read every document first (Namespaces anywhere in the
// stream count for Mappings anywhere in it), then write each back, changed or as it was.
func injectStream(ctx context.Context, in io.Reader, out, diag io.Writer, cfg *inject.Config, ns streamNamespace, meshed []string, live mapping.Namespaces) error {
	docs, err := readDocuments(in)
	if err != nil {
		return err
	}
	known := mapping.StaticNamespaces{}
	for _, d := range docs {
		if d.APIVersion == "v1" && d.Kind == "Namespace" {
			var ns struct {
				Metadata struct {
					Name   string            `json:"name"`
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal(d.raw, &ns); err == nil && ns.Metadata.Name != "" {
				known[ns.Metadata.Name] = ns.Metadata.Labels
			}
		}
	}
	if len(meshed) > 0 {
		labels, negativeOnly, err := cfg.Mapping.MeshedLabels()
		if err != nil {
			return fmt.Errorf("inject: --meshed-namespaces: %w", err)
		}
		if negativeOnly {
			fmt.Fprintf(diag, "Note: --meshed-namespaces: the first satisfiable mapping.meshedNamespaceSelectors has only negative terms, so it makes every namespace without the labels it excludes meshed; %s get no labels\n", strings.Join(meshed, ", "))
		}
		for _, name := range meshed {
			known[strings.TrimSpace(name)] = labels
		}
	}
	namespaces := layered{first: known, then: live}

	for i, d := range docs {
		outDoc, msgs, err := transform(ctx, d, cfg, ns, namespaces)
		if err != nil {
			return fmt.Errorf("inject: document %d (%s %s): %w", i+1, d.APIVersion, d.Kind, err)
		}
		for _, m := range msgs {
			fmt.Fprintln(diag, m)
		}
		if i > 0 {
			io.WriteString(out, "---\n")
		}
		out.Write(outDoc)
	}
	return nil
}

// workloadKind is the inject kind of a document, or "".
func workloadKind(d document) string {
	switch {
	case d.APIVersion == "apps/v1" && (d.Kind == inject.KindDeployment || d.Kind == inject.KindDaemonSet),
		d.APIVersion == "v1" && d.Kind == inject.KindPod:
		return d.Kind
	}
	return ""
}

// transform returns what one document becomes and the messages kubectl would have shown.
// A workload or a Mapping becomes what the webhook's own patch makes of it: the CLI
// decodes, decides and patches with the functions the admission handlers call, then
// applies the patch as the API server would.
func transform(ctx context.Context, d document, cfg *inject.Config, ns streamNamespace, namespaces mapping.Namespaces) ([]byte, []string, error) {
	kind := workloadKind(d)
	isMapping := strings.HasPrefix(d.APIVersion, "getambassador.io/") && d.Kind == "Mapping"
	if kind == "" && !isMapping {
		return d.raw, nil, nil
	}
	if kind != "" {
		// What kubectl apply --validate=strict would reject is an error here too.
		typed := map[string]any{inject.KindDeployment: &appsv1.Deployment{}, inject.KindDaemonSet: &appsv1.DaemonSet{}, inject.KindPod: &corev1.Pod{}}[kind]
		if err := yaml.UnmarshalStrict(d.raw, typed); err != nil {
			return nil, nil, err
		}
	}
	raw, err := yaml.YAMLToJSON(d.raw)
	if err != nil {
		return nil, nil, err
	}
	raw, added, err := inNamespace(raw, ns)
	if err != nil {
		return nil, nil, err
	}
	if kind != "" {
		w, err := inject.DecodeWorkload(kind, raw)
		if err != nil {
			return nil, nil, err
		}
		res, patch, err := inject.WorkloadPatch(w, cfg)
		if err != nil {
			return nil, nil, err
		}
		if patch == nil {
			return d.raw, warnings(res.Warnings), nil
		}
		out, err := applyPatch(raw, patch, true, added)
		return out, append([]string{"Injected: " + res.Message}, warnings(append(res.Notices, res.Warnings...))...), err
	}
	obj, err := mapping.Decode(raw)
	if err != nil {
		return nil, nil, err
	}
	dec, err := mapping.Decide(obj, &cfg.Mapping, cfg.Mapping.Lookup(ctx, namespaces))
	if err != nil {
		return nil, nil, fmt.Errorf("looking up namespaces: %w", err)
	}
	patch, err := mapping.Patch(obj, dec)
	if err != nil || patch == nil {
		return d.raw, warnings(dec.Warnings), err
	}
	out, err := applyPatch(raw, patch, false, added)
	return out, warnings(append([]string{dec.Notice}, dec.Warnings...)), err
}

// inNamespace puts the JSON object raw in ns when it names no namespace (added), as the API
// server does for kubectl apply -n; a document in another namespace than an explicit -n is
// an error, as with kubectl.
func inNamespace(raw []byte, ns streamNamespace) ([]byte, bool, error) {
	var obj map[string]interface{}
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return raw, false, nil // the decoder says what is wrong with it
	}
	meta, _ := obj["metadata"].(map[string]interface{})
	if meta == nil {
		meta = map[string]interface{}{}
		obj["metadata"] = meta
	}
	if have, _ := meta["namespace"].(string); have != "" {
		if ns.explicit && have != ns.name {
			return nil, false, fmt.Errorf("the namespace from the provided object %q does not match the namespace %q: pass --namespace=%s", have, ns.name, have)
		}
		return raw, false, nil
	}
	meta["namespace"] = ns.name
	out, err := json.Marshal(obj)
	return out, true, err
}

// applyPatch applies patch to doc (JSON) and returns the result as YAML. With prune it
// leaves out the empty fields that typed encoding writes into a workload patch's values and
// that a user never writes (see pruneGenerated); with dropNamespace, the namespace
// inNamespace added.
func applyPatch(doc, patch []byte, prune, dropNamespace bool) ([]byte, error) {
	ops, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return nil, err
	}
	out, err := ops.Apply(doc)
	if err != nil {
		return nil, err
	}
	var m map[string]interface{}
	if err := yaml.Unmarshal(out, &m); err != nil {
		return nil, err
	}
	if prune {
		pruneGenerated(m)
	}
	if meta, ok := m["metadata"].(map[string]interface{}); ok && dropNamespace {
		delete(meta, "namespace")
		if len(meta) == 0 {
			delete(m, "metadata")
		}
	}
	return yaml.Marshal(m)
}

func warnings(ws []string) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = "Warning: " + w
	}
	return out
}

func readDocuments(in io.Reader) ([]document, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(in))
	var docs []document
	for {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("inject: reading YAML: %w", err)
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		d := document{raw: raw}
		if err := yaml.Unmarshal(raw, &d); err != nil {
			return nil, fmt.Errorf("inject: document %d is not valid YAML: %w", len(docs)+1, err)
		}
		docs = append(docs, d)
	}
}

// pruneGenerated removes the empty fields that typed encoding adds and a user never wrote
// (status: {}, strategy: {}, resources: {}, creationTimestamp: null). Only those: other empty
// objects (emptyDir: {}) mean something.
func pruneGenerated(m map[string]interface{}) {
	for k, v := range m {
		switch {
		case k == "creationTimestamp" && v == nil:
			delete(m, k)
		case (k == "status" || k == "strategy" || k == "resources") && isEmptyMap(v):
			delete(m, k)
		default:
			if sub, ok := v.(map[string]interface{}); ok {
				pruneGenerated(sub)
			}
			if list, ok := v.([]interface{}); ok {
				for _, item := range list {
					if sub, ok := item.(map[string]interface{}); ok {
						pruneGenerated(sub)
					}
				}
			}
		}
	}
}

func isEmptyMap(v interface{}) bool {
	m, ok := v.(map[string]interface{})
	return ok && len(m) == 0
}
