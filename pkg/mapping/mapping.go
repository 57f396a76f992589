// Package mapping decides whether a getambassador.io Mapping gets `tls: <TLSContext>` (and
// its port pinned to 80) because its upstream is in an Istio-meshed namespace, and writes
// that decision as the JSON patch the webhook answers with. Everything here is a pure
// function of the object, the Config and a MeshLookup: no client, no server, no metrics.
// The admission handler (pkg/mutate) and the offline CLI (webhook inject, webhook audit)
// share it; each brings its own source of namespace labels.
//
//   - service.go: Emissary's reading of spec.service, and the namespace it means;
//   - decide.go: the decision and its reasons;
//   - mesh.go: which namespaces are meshed (the lookup the decision asks);
//   - config.go: the `mapping` section of the configuration file;
//   - patch.go: decoding a Mapping and the patch that applies a decision.
package mapping
