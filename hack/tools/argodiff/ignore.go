package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	jsonpatch "github.com/evanphx/json-patch"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// ignoreDifference is one entry of an Argo CD Application's spec.ignoreDifferences.
type ignoreDifference struct {
	Group             string   `json:"group"`
	Kind              string   `json:"kind"`
	Name              string   `json:"name"`
	Namespace         string   `json:"namespace"`
	JSONPointers      []string `json:"jsonPointers"`
	JQPathExpressions []string `json:"jqPathExpressions"`
}

// ignoreNormalizer removes the fields an ignoreDifferences list names from both sides before
// the diff, as Argo CD's ignore normalizer (argo-cd's util/argo/normalizers, not part of
// gitops-engine) does for jsonPointers: a JSON patch "remove" per pointer, a path that is not
// there skipped. jqPathExpressions would need gojq; a list that has them is refused rather than
// half applied.
type ignoreNormalizer struct{ rules []ignoreDifference }

func newIgnoreNormalizer(b []byte) (*ignoreNormalizer, error) {
	var rules []ignoreDifference
	if err := yaml.UnmarshalStrict(b, &rules); err != nil {
		return nil, err
	}
	for _, r := range rules {
		if len(r.JQPathExpressions) > 0 {
			return nil, errors.New("jqPathExpressions are not supported here, only jsonPointers")
		}
		if r.Kind == "" {
			return nil, errors.New("an ignoreDifferences entry needs a kind")
		}
	}
	return &ignoreNormalizer{rules: rules}, nil
}

func (n *ignoreNormalizer) Normalize(un *unstructured.Unstructured) error {
	gvk := un.GroupVersionKind()
	doc, err := json.Marshal(un.Object)
	if err != nil {
		return err
	}
	for _, r := range n.rules {
		if r.Group != gvk.Group || r.Kind != gvk.Kind || (r.Name != "" && r.Name != un.GetName()) ||
			(r.Namespace != "" && r.Namespace != un.GetNamespace()) {
			continue
		}
		for _, pointer := range r.JSONPointers {
			op, _ := json.Marshal([]map[string]string{{"op": "remove", "path": pointer}})
			patch, err := jsonpatch.DecodePatch(op)
			if err != nil {
				return fmt.Errorf("jsonPointer %q: %w", pointer, err)
			}
			patched, err := patch.Apply(doc)
			if err != nil {
				if strings.Contains(err.Error(), "nonexistent") || strings.Contains(err.Error(), "missing path") {
					continue // the field is not there: nothing to ignore
				}
				return fmt.Errorf("jsonPointer %q: %w", pointer, err)
			}
			doc = patched
		}
	}
	un.Object = nil
	return json.Unmarshal(doc, &un.Object)
}
