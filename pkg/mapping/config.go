package mapping

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// DefaultTLSContext is the TLSContext written when none is configured (the seed's name).
const DefaultTLSContext = "istio-upstream"

// DefaultMeshedNamespaceSelectors mirror Istio's own injection rules: injection enabled by
// label, or a revision label without an explicit opt-out.
var DefaultMeshedNamespaceSelectors = []string{
	"istio-injection=enabled",
	"istio.io/rev,istio-injection!=disabled",
}

// Config is the `mapping` section of the webhook's configuration file: the Mapping
// defaulting settings. Get one from DefaultConfig, or as part of a loaded configuration
// file (inject.LoadConfig), which applies ApplyDefaults and Validate.
type Config struct {
	// TLSContext is the name written into spec.tls of Mappings to meshed services.
	TLSContext string `json:"tlsContext"`
	// A namespace is meshed when ANY of these label selectors matches its labels. An explicit
	// empty list means no namespace is meshed (Mapping defaulting is off).
	MeshedNamespaceSelectors []string `json:"meshedNamespaceSelectors"`

	selectors []labels.Selector // compiled by Validate
}

// DefaultConfig returns a defaulted, valid Config.
func DefaultConfig() *Config {
	c := &Config{}
	c.ApplyDefaults()
	if errs := c.Validate(); len(errs) > 0 {
		panic(fmt.Sprintf("mapping: default config is invalid: %v", errs))
	}
	return c
}

// ApplyDefaults fills in what is not set. An explicit empty selector list stays empty.
func (c *Config) ApplyDefaults() {
	if c.TLSContext == "" {
		c.TLSContext = DefaultTLSContext
	}
	if c.MeshedNamespaceSelectors == nil {
		c.MeshedNamespaceSelectors = append([]string(nil), DefaultMeshedNamespaceSelectors...)
	}
}

// Validate checks every key and returns every problem, each error naming its key within
// the section ("tlsContext: ..."). It also compiles the selectors Meshed matches.
func (c *Config) Validate() []error {
	var errs []error
	for _, m := range validation.IsDNS1123Subdomain(c.TLSContext) {
		errs = append(errs, fmt.Errorf("tlsContext: %s", m))
	}
	c.selectors = nil
	for i, s := range c.MeshedNamespaceSelectors {
		key := fmt.Sprintf("meshedNamespaceSelectors[%d]", i)
		if strings.TrimSpace(s) == "" {
			errs = append(errs, fmt.Errorf("%s: must not be empty (it would match every namespace)", key))
			continue
		}
		sel, err := labels.Parse(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: invalid label selector %q: %v", key, s, err))
			continue
		}
		c.selectors = append(c.selectors, sel)
	}
	return errs
}

// Meshed reports whether a namespace with these labels is meshed: whether any of the
// configured selectors matches them.
func (c *Config) Meshed(namespaceLabels map[string]string) bool {
	set := labels.Set(namespaceLabels)
	for _, sel := range c.selectors {
		if sel.Matches(set) {
			return true
		}
	}
	return false
}
