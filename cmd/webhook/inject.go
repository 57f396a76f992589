package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/emissary-istio/emissary-istio-webhook/pkg/inject"
	"github.com/emissary-istio/emissary-istio-webhook/pkg/mapping"
)

func newInjectCommand() *cobra.Command {
	var (
		file, configPath, kubeconfig string
		meshed                       []string
	)
	cmd := &cobra.Command{
		Use:   "inject -f FILE|-",
		Short: "Print a YAML stream as the webhook would make the cluster store it",
		Long: `inject reads a multi-document YAML stream and writes it back with every Emissary
Deployment injected and every Mapping defaulted exactly as the admission webhook would do
it: it applies the very patch the webhook answers with. Other documents are written back as
they were read. What was done and why goes to stderr.

Whether a Mapping's upstream namespace is meshed comes from Namespace documents in the
stream, from --meshed-namespaces, and from a live cluster with --kubeconfig.

  webhook inject -f emissary.yaml | kubectl apply -f -`,
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
			var live mapping.Namespaces
			if kubeconfig != "" {
				if live, err = liveNamespaces(kubeconfig); err != nil {
					return err
				}
			}
			return injectStream(cmd.Context(), in, cmd.OutOrStdout(), cmd.ErrOrStderr(), cfg, meshed, live)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", `YAML file to read, "-" for standard input`)
	f.StringVar(&configPath, "config", "", "configuration file (defaults apply when empty)")
	f.StringSliceVar(&meshed, "meshed-namespaces", nil, "namespaces to treat as Istio-meshed (comma separated)")
	f.StringVar(&kubeconfig, "kubeconfig", "", "read namespace labels from this cluster")
	return cmd
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

func liveNamespaces(kubeconfig string) (mapping.Namespaces, error) {
	restCfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("inject: kubeconfig %s: %w", kubeconfig, err)
	}
	c, err := client.New(restCfg, client.Options{})
	if err != nil {
		return nil, fmt.Errorf("inject: %w", err)
	}
	return apiNamespaces{c}, nil
}

// document is one YAML document of the stream and what it says it is.
type document struct {
	raw        []byte
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// injectStream is `webhook inject`: read every document first (Namespaces anywhere in the
// stream count for Mappings anywhere in it), then write each back, changed or as it was.
func injectStream(ctx context.Context, in io.Reader, out, diag io.Writer, cfg *inject.Config, meshed []string, live mapping.Namespaces) error {
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
	for _, name := range meshed {
		known[strings.TrimSpace(name)] = map[string]string{"istio-injection": "enabled"}
	}
	namespaces := layered{first: known, then: live}

	for i, d := range docs {
		outDoc, msgs, err := transform(ctx, d, cfg, namespaces)
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

// transform returns what one document becomes and the messages kubectl would have shown.
// A Deployment or a Mapping becomes what the webhook's own patch makes of it: the CLI
// decodes, decides and patches with the functions the admission handlers call, then
// applies the patch as the API server would.
func transform(ctx context.Context, d document, cfg *inject.Config, namespaces mapping.Namespaces) ([]byte, []string, error) {
	switch {
	case d.APIVersion == "apps/v1" && d.Kind == "Deployment":
		// What kubectl apply --validate=strict would reject is an error here too.
		if err := yaml.UnmarshalStrict(d.raw, &appsv1.Deployment{}); err != nil {
			return nil, nil, err
		}
		raw, err := yaml.YAMLToJSON(d.raw)
		if err != nil {
			return nil, nil, err
		}
		dep, err := inject.DecodeDeployment(raw)
		if err != nil {
			return nil, nil, err
		}
		res, patch, err := inject.DeploymentPatch(dep, cfg)
		if err != nil {
			return nil, nil, err
		}
		msgs := warnings(res.Warnings)
		if patch == nil {
			return d.raw, msgs, nil
		}
		out, err := applyPatch(raw, patch, true)
		return out, append([]string{"Injected: " + res.Message}, msgs...), err
	case strings.HasPrefix(d.APIVersion, "getambassador.io/") && d.Kind == "Mapping":
		raw, err := yaml.YAMLToJSON(d.raw)
		if err != nil {
			return nil, nil, err
		}
		obj, err := mapping.Decode(raw)
		if err != nil {
			return nil, nil, err
		}
		dec, err := mapping.Decide(obj, &cfg.Mapping, cfg.Mapping.Lookup(ctx, namespaces))
		if err != nil {
			return nil, nil, fmt.Errorf("looking up namespaces: %w", err)
		}
		msgs := warnings(dec.Warnings)
		patch, err := mapping.Patch(obj, dec)
		if err != nil || patch == nil {
			return d.raw, msgs, err
		}
		out, err := applyPatch(raw, patch, false)
		return out, msgs, err
	}
	return d.raw, nil, nil
}

// applyPatch applies patch to doc (JSON) and returns the result as YAML. With prune it
// leaves out the empty fields that typed encoding writes into a Deployment patch's values
// and that a user never writes (see pruneGenerated).
func applyPatch(doc, patch []byte, prune bool) ([]byte, error) {
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
