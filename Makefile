# emissary-istio-webhook. `make help` lists the targets.
#
# Everything the project needs is built here from the Go module proxy: the webhook, and a
# real Kubernetes control plane (kube-apiserver, kubectl, etcd) for the tests and the demo.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

K8S_VERSION   ?= v1.37.2
ETCD_VERSION  ?= v3.6.16
# Istio's pilot-agent and istiod, built from istio.io/istio at the commit tagged ISTIO_VERSION
# (hack/tools/istio/go.mod pins it). The default istioVersion of the webhook equals it.
ISTIO_VERSION ?= 1.29.1
ISTIO_COMMIT  := 6991a379e1fcfbe21e64da2eda5d56624a5547b4
STATICCHECK_VERSION ?= v0.8.2
# The release: the binary's `version`, the image tag, manifests/base's images: newTag and the
# chart's appVersion (test/image checks that they all say the same).
VERSION       := v0.2.0

ROOT      := $(abspath .)
K8S_BIN   := $(ROOT)/bin/k8s/$(K8S_VERSION)
TOOLS_BIN := $(ROOT)/bin/tools
ENVTEST_BINARIES := $(K8S_BIN)/kube-apiserver $(K8S_BIN)/kubectl $(K8S_BIN)/etcd $(K8S_BIN)/kube-controller-manager
ISTIO_BIN := $(ROOT)/bin/istio/$(ISTIO_VERSION)
ISTIO_AGENT_BINARIES := $(ISTIO_BIN)/pilot-agent $(ISTIO_BIN)/pilot-discovery $(ISTIO_BIN)/xdsprobe
ISTIO_BINARIES := $(ISTIO_AGENT_BINARIES) $(ISTIO_BIN)/istioinject

# Tests and the demo find the control plane here (controller-runtime's envtest reads it), and
# the real-Istio suite finds pilot-agent and pilot-discovery in ISTIO_BIN.
export KUBEBUILDER_ASSETS := $(K8S_BIN)
export ISTIO_BIN

K8S_MINOR := $(word 2,$(subst ., ,$(K8S_VERSION)))
K8S_LDFLAGS := -s -w \
	-X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=$(K8S_MINOR) \
	-X k8s.io/component-base/version.gitTreeState=clean \
	-X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/client-go/pkg/version.gitMajor=1 \
	-X k8s.io/client-go/pkg/version.gitMinor=$(K8S_MINOR)
WEBHOOK_LDFLAGS := -X github.com/emissary-istio/emissary-istio-webhook/pkg/inject.Version=$(VERSION)

FUZZTIME ?= 10m
FUZZTIME_SHORT ?= 8s
FUZZMINIMIZETIME ?= 5s
FUZZFLAGS ?=
FUZZ_PKGS := ./pkg/inject ./pkg/mapping ./pkg/mutate

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/webhook.
	go build -ldflags "$(WEBHOOK_LDFLAGS)" -o bin/webhook ./cmd/webhook

.PHONY: envtest
envtest: $(ENVTEST_BINARIES) ## Build kube-apiserver, kubectl, kube-controller-manager and etcd into bin/k8s/<version> (once).

# kube-apiserver and kubectl come from k8s.io/kubernetes through hack/tools/k8s, whose go.mod
# points each staging module at its published version. About 8 minutes cold on 2 cores.
$(K8S_BIN)/kube-apiserver $(K8S_BIN)/kubectl &: hack/tools/k8s/go.mod hack/tools/k8s/go.sum
	@mkdir -p $(K8S_BIN)
	@echo ">> building kube-apiserver and kubectl $(K8S_VERSION) from source (about 8 minutes the first time)"
	cd hack/tools/k8s && go build -trimpath -ldflags "$(K8S_LDFLAGS)" -o $(K8S_BIN)/ \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
	@touch $(K8S_BIN)/kube-apiserver $(K8S_BIN)/kubectl

# kube-controller-manager, from the same module with the same version stamp: the chain tests
# (test/istio) run its deployment and replicaset controllers, so that a Deployment becomes Pods
# through admission as in a cluster. A separate build after kube-apiserver's, whose packages it
# reuses from the build cache: about 3 more minutes of CPU cold.
$(K8S_BIN)/kube-controller-manager: hack/tools/k8s/go.mod hack/tools/k8s/go.sum | $(K8S_BIN)/kube-apiserver
	@mkdir -p $(K8S_BIN)
	@echo ">> building kube-controller-manager $(K8S_VERSION) from source"
	cd hack/tools/k8s && go build -trimpath -ldflags "$(K8S_LDFLAGS)" -o $@ k8s.io/kubernetes/cmd/kube-controller-manager

.PHONY: istio
istio: $(ISTIO_BINARIES) ## Build Istio's pilot-agent and pilot-discovery (and xdsprobe, istioinject) into bin/istio/<version> (once).

# Static (CGO_ENABLED=0): the real-Istio suite runs pilot-agent inside a minimal root, as in its
# image. The version ldflags are what istiod reads from the proxy's metadata. About 7 minutes
# cold on 2 cores.
ISTIO_LDFLAGS := -s -w \
	-X istio.io/istio/pkg/version.buildVersion=$(ISTIO_VERSION) \
	-X istio.io/istio/pkg/version.buildGitRevision=$(ISTIO_COMMIT) \
	-X istio.io/istio/pkg/version.buildTag=$(ISTIO_VERSION) \
	-X istio.io/istio/pkg/version.buildStatus=Clean
# xdsprobe (our own, hack/tools/istio/xdsprobe) stands in for Envoy: it shares Istio's XDS types.
$(ISTIO_AGENT_BINARIES) &: hack/tools/istio/go.mod hack/tools/istio/go.sum $(wildcard hack/tools/istio/xdsprobe/*.go)
	@mkdir -p $(ISTIO_BIN)
	@echo ">> building Istio $(ISTIO_VERSION) pilot-agent and pilot-discovery from source (about 7 minutes the first time)"
	cd hack/tools/istio && CGO_ENABLED=0 go build -trimpath -ldflags "$(ISTIO_LDFLAGS)" -o $(ISTIO_BIN)/ \
		istio.io/istio/pilot/cmd/pilot-agent istio.io/istio/pilot/cmd/pilot-discovery ./xdsprobe
	@touch $(ISTIO_AGENT_BINARIES)

# istioinject (our own, hack/tools/istio/istioinject) answers what Istio's own injector renders
# for a revision's ConfigMaps, for the suite to compare with. Built after the agent binaries,
# with their flags, it reuses their compiled packages: about 30 s more, cold.
$(ISTIO_BIN)/istioinject: hack/tools/istio/go.mod hack/tools/istio/go.sum $(wildcard hack/tools/istio/istioinject/*.go) | $(ISTIO_AGENT_BINARIES)
	@mkdir -p $(ISTIO_BIN)
	cd hack/tools/istio && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o $@ ./istioinject

$(K8S_BIN)/etcd: hack/tools/etcd/go.mod hack/tools/etcd/go.sum
	@mkdir -p $(K8S_BIN)
	@echo ">> building etcd $(ETCD_VERSION) from source"
	cd hack/tools/etcd && go build -trimpath -ldflags "-s -w" -o $@ go.etcd.io/etcd/server/v3

.PHONY: test
test: $(ENVTEST_BINARIES) $(ISTIO_BINARIES) ## Unit tests, envtest suites, the real-Istio suite, kubectl end-to-end tests, the race run and a short fuzz (Linux, as root).
	go test -count=1 ./...
	$(MAKE) --no-print-directory test-race fuzz-short

# The packages whose tests compare with golden files (they import test/golden).
GOLDEN_PKGS = $(shell go list -f '{{.ImportPath}}{{range .TestImports}} {{.}}{{end}}{{range .XTestImports}} {{.}}{{end}}' ./... | \
	awk '/ [^ ]*\/test\/golden( |$$)/ {print $$1}')

.PHONY: golden
golden: ## Rewrite the golden files (testdata/*.golden.*) from the current output; review the diff.
	UPDATE_GOLDEN=1 go test -count=1 $(GOLDEN_PKGS)
	@git diff --stat -- '*.golden.*'

# The race detector over the packages that run concurrently in the server, and over 1,000
# concurrent admissions against the real HTTPS server. (The whole envtest package under -race
# would add minutes of kubectl-driven tests that exercise no more concurrency.)
.PHONY: test-race
test-race: $(ENVTEST_BINARIES) ## Unit tests and the concurrent-admissions test with the race detector.
	go test -race -count=1 ./pkg/...
	go test -race -count=1 -run '^TestConcurrentAdmissions$$' ./test/envtest/

# demo and run build the program, then run it (not `go run`): on Ctrl-C the go command exits
# 1 whatever the program does, which would report the demo's clean stop as a failure.
.PHONY: demo
demo: $(ENVTEST_BINARIES) ## Start a control plane, register the webhook, apply Emissary's Deployment and a Mapping with kubectl, print the result.
	go build -ldflags "$(WEBHOOK_LDFLAGS)" -o bin/demo ./hack/demo
	bin/demo

.PHONY: run
run: $(ENVTEST_BINARIES) ## Like demo, but keep running; use bin/dev.kubeconfig with kubectl. Ctrl-C stops.
	go build -ldflags "$(WEBHOOK_LDFLAGS)" -o bin/demo ./hack/demo
	bin/demo --keep-running --kubeconfig-out bin/dev.kubeconfig

# make bench: the handler benchmarks against their floors (test/benchreport, in rounds), the
# load test, the end-to-end overhead through kube-apiserver and the namespace-scale figures
# (test/load), then docs/PERFORMANCE.md. About 5 minutes on 2 cores once the control plane is
# built. Nothing here has a wall-clock threshold in `make test`. BENCH_ROUNDS and BENCH_TIME
# trade time for steadiness. The programs are built, then run (see demo).
BENCH_ROUNDS ?= 20
BENCH_TIME   ?= 0.5s

.PHONY: bench
bench: $(ENVTEST_BINARIES) ## Benchmarks, load, end-to-end and scale figures; writes docs/PERFORMANCE.md.
	@mkdir -p bin/perf
	go build -ldflags "$(WEBHOOK_LDFLAGS)" -o bin/webhook ./cmd/webhook
	go build -o bin/perf/load ./test/load
	go build -o bin/perf/benchreport ./test/benchreport
	bin/perf/load -webhook bin/webhook -json bin/perf/load.json
	bin/perf/benchreport -rounds $(BENCH_ROUNDS) -benchtime $(BENCH_TIME) \
		-load bin/perf/load.json -raw bin/perf/bench.txt -out docs/PERFORMANCE.md

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 10m), one after another.
	$(call run-fuzz,$(FUZZTIME))

.PHONY: fuzz-short
fuzz-short: ## Run every fuzz target for FUZZTIME_SHORT each (default 8s); part of `make test`.
	$(call run-fuzz,$(FUZZTIME_SHORT))

# run-fuzz runs each Fuzz* target of FUZZ_PKGS for $(1). A failing input is written to the
# package's testdata/fuzz/<target>/ and the run stops; commit it with the fix, and every later
# `go test` replays it. Minimising each new interesting input for the default 60s starves the
# search on the large Deployment inputs, hence FUZZMINIMIZETIME. FUZZFLAGS=-parallel=1 leaves
# a core free.
define run-fuzz
	@for pkg in $(FUZZ_PKGS); do \
		for target in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo ">> $$pkg $$target ($(1))"; \
			go test -run '^$$' -fuzz "^$$target$$" -fuzztime $(1) \
				-fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) $$pkg; \
		done; \
	done
endef

$(TOOLS_BIN)/staticcheck:
	GOBIN=$(TOOLS_BIN) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# actionlint checks the GitHub Actions workflows, and the shell of their run: steps with
# shellcheck when one is on PATH (Debian's and GitHub's runners have it; nothing else needs it).
ACTIONLINT := $(TOOLS_BIN)/actionlint
$(ACTIONLINT): hack/tools/actionlint/go.mod hack/tools/actionlint/go.sum
	@mkdir -p $(TOOLS_BIN)
	cd hack/tools/actionlint && CGO_ENABLED=0 go build -trimpath -o $@ github.com/rhysd/actionlint/cmd/actionlint

.PHONY: lint
lint: $(TOOLS_BIN)/staticcheck $(ACTIONLINT) ## gofmt, go vet, staticcheck and actionlint.
	@out=$$(gofmt -l $$(git ls-files '*.go') $$(git ls-files --others --exclude-standard '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	$(TOOLS_BIN)/staticcheck ./...
	@command -v shellcheck >/dev/null || echo ">> shellcheck is not on PATH: actionlint checks the workflows without their run: scripts"
	$(ACTIONLINT)

.PHONY: clean
clean: ## Remove dist/ and bin/ except the control plane (make clean-all removes that too).
	rm -rf $(DIST)
	find bin -mindepth 1 -maxdepth 1 ! -name k8s -exec rm -rf {} + 2>/dev/null || true

.PHONY: clean-all
clean-all: ## Remove dist/ and bin/ entirely, including the control plane binaries.
	rm -rf bin $(DIST)

# ---- Shipping: the container image, the Helm chart, the dashboard ----

# helm, built from the Go module proxy through hack/tools/helm (helm pins its own k8s.io
# versions), with the ldflags of helm's own release build: its version, and the Kubernetes
# version that `helm template` and `helm lint` assume without a cluster (a source build
# otherwise assumes v1.20, older than the chart's kubeVersion).
HELM_VERSION := $(shell sed -n 's/^require helm.sh\/helm\/v3 //p' hack/tools/helm/go.mod)
HELM := $(TOOLS_BIN)/helm
HELM_LDFLAGS := -s -w \
	-X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	-X helm.sh/helm/v3/internal/version.gitTreeState=clean \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(K8S_MINOR) \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(K8S_MINOR)

$(HELM): hack/tools/helm/go.mod hack/tools/helm/go.sum
	@mkdir -p $(TOOLS_BIN)
	@echo ">> building helm $(HELM_VERSION) from source"
	cd hack/tools/helm && CGO_ENABLED=0 go build -trimpath -ldflags "$(HELM_LDFLAGS)" -o $@ helm.sh/helm/v3/cmd/helm

.PHONY: helm
helm: $(HELM) ## Build bin/tools/helm (once).

# The container image, built here without a container engine or a registry: the webhook
# cross-compiled (static, CGO_ENABLED=0) for each platform, assembled by hack/image with
# go-containerregistry into bin/image/:
#   emissary-istio-webhook-linux-<arch>.tar  docker-save archives, one per platform: what
#                                            `docker load`, `podman load` and `kind load
#                                            image-archive` take, on any version;
#   emissary-istio-webhook.oci.tar           an OCI image layout with a multi-platform index:
#                                            what to push (`skopeo copy --all oci-archive:...`),
#                                            also taken by podman, containerd (ctr import) and
#                                            Docker >= 25 with the containerd image store.
# The Dockerfile builds the same image with Docker (test/image compares them). SOURCE_DATE_EPOCH
# (the commit's time) dates the image and its files, so a rebuild of a commit is identical.
IMAGE             ?= ghcr.io/emissary-istio/emissary-istio-webhook
IMAGE_PLATFORMS   ?= linux/amd64 linux/arm64
IMAGE_SOURCE      := https://github.com/emissary-istio/emissary-istio-webhook
IMAGE_REVISION    := $(shell git rev-parse HEAD 2>/dev/null)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
IMAGE_LDFLAGS     := -s -w $(WEBHOOK_LDFLAGS)

# Always run: `go build` is cached, so an unchanged tree costs seconds, and the labels follow
# the commit.
.PHONY: image
image: ## Build the container image archives into bin/image/ (linux/amd64 and linux/arm64).
	@mkdir -p bin/image
	@for p in $(IMAGE_PLATFORMS); do \
		echo ">> go build $$p"; \
		CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} go build -trimpath -ldflags "$(IMAGE_LDFLAGS)" \
			-o bin/image/$${p%/*}-$${p#*/}/webhook ./cmd/webhook; \
	done
	go run ./hack/image -out bin/image -repository $(IMAGE) -version $(VERSION) \
		-source $(IMAGE_SOURCE) -revision "$(IMAGE_REVISION)" -created $(SOURCE_DATE_EPOCH) \
		$(foreach p,$(IMAGE_PLATFORMS),-binary $(p)=bin/image/$(subst /,-,$(p))/webhook)

# promql: Prometheus' own PromQL parser, for the dashboard test (hack/tools/promql).
.PHONY: promql
promql: $(TOOLS_BIN)/promql ## Build bin/tools/promql, the dashboard test's PromQL checker (once).

$(TOOLS_BIN)/promql: hack/tools/promql/go.mod hack/tools/promql/go.sum hack/tools/promql/main.go
	@mkdir -p $(TOOLS_BIN)
	cd hack/tools/promql && go build -trimpath -o $@ .

# fluxdiff and argodiff: Flux's and Argo CD's own drift code as small programs, for the GitOps
# tests (test/envtest/gitops_*_test.go, docs/gitops.md). Each is a nested module: Flux's ssa
# pulls in its cli-utils and jsondiff, and Argo CD's gitops-engine v0.7.3 needs Kubernetes 1.23
# libraries (argodiff's go.mod says how they build). argodiff is about 4 minutes cold on 2 cores.
.PHONY: gitops-tools
gitops-tools: $(TOOLS_BIN)/fluxdiff $(TOOLS_BIN)/argodiff ## Build bin/tools/fluxdiff and bin/tools/argodiff, the GitOps tests' engines (once).

$(TOOLS_BIN)/fluxdiff: hack/tools/fluxdiff/go.mod hack/tools/fluxdiff/go.sum $(wildcard hack/tools/fluxdiff/*.go)
	@mkdir -p $(TOOLS_BIN)
	cd hack/tools/fluxdiff && go build -trimpath -o $@ .

$(TOOLS_BIN)/argodiff: hack/tools/argodiff/go.mod hack/tools/argodiff/go.sum $(wildcard hack/tools/argodiff/*.go)
	@mkdir -p $(TOOLS_BIN)
	@echo ">> building argodiff on Argo CD's gitops-engine (about 4 minutes the first time)"
	cd hack/tools/argodiff && go build -trimpath -o $@ .

# cert-manager's own Certificate and issuer controllers, for test/ha's renewals and CA rotation
# (hack/tools/cert-manager; cert-manager publishes no module for its controller binary).
$(TOOLS_BIN)/cert-manager-controller: hack/tools/cert-manager/go.mod hack/tools/cert-manager/go.sum hack/tools/cert-manager/main.go
	@mkdir -p $(TOOLS_BIN)
	@echo ">> building cert-manager's controllers from its Go module"
	cd hack/tools/cert-manager && go build -o $@ .

# ---- Emissary's own chart and manifests ----

# What the tests apply as Emissary: its real Helm chart, emissary-crds.yaml (the apiext
# Deployment), the Consul connector and the quote backend of its documentation, from its
# Go module on the module proxy (checksum-verified by the go command), released as
# Emissary's build-aux/main.mk releases them: @version@, @chartVersion@ and @imageRepo@ (the
# chart), $version$ and $imageRepo$ (the YAML) substituted. Nothing of it is committed here.
EMISSARY_VERSION       := v3.10.0
EMISSARY_CHART_VERSION := 8.10.0
EMISSARY_IMAGE_REPO    := docker.io/emissaryingress/emissary
EMISSARY_DIR           := $(ROOT)/bin/emissary/$(EMISSARY_VERSION)
export EMISSARY_DIR

$(EMISSARY_DIR)/.released:
	@echo ">> Emissary $(EMISSARY_VERSION)'s chart and manifests from its Go module"
	@src=$$(go mod download -json github.com/emissary-ingress/emissary/v3@$(EMISSARY_VERSION) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
		test -d "$$src" || { echo "go mod download gave no directory"; exit 1; }; \
		rm -rf $(EMISSARY_DIR) && mkdir -p $(EMISSARY_DIR)/charts $(EMISSARY_DIR)/yaml && \
		cp -R "$$src/charts/emissary-ingress" $(EMISSARY_DIR)/charts/ && chmod -R u+w $(EMISSARY_DIR) && \
		for file in Chart.yaml values.yaml; do \
			sed -e 's/@version@/$(EMISSARY_VERSION:v%=%)/g' -e 's/@chartVersion@/$(EMISSARY_CHART_VERSION)/g' \
				-e 's,@imageRepo@,$(EMISSARY_IMAGE_REPO),g' \
				< $(EMISSARY_DIR)/charts/emissary-ingress/$$file.in > $(EMISSARY_DIR)/charts/emissary-ingress/$$file; \
		done && \
		for file in manifests/emissary/emissary-crds.yaml.in docs/yaml/consul/ambassador-consul-connector.yaml \
				docs/yaml/ambassador-injector.yaml docs/yaml/backends/quote.yaml; do \
			base=$$(basename $$file .in); \
			sed -e 's/\$$version\$$/$(EMISSARY_VERSION:v%=%)/g' -e 's,\$$imageRepo\$$,$(EMISSARY_IMAGE_REPO),g' \
				< "$$src/$$file" > $(EMISSARY_DIR)/yaml/$$base; \
		done
	@touch $@

.PHONY: emissary
emissary: $(EMISSARY_DIR)/.released ## Emissary's chart and manifests (its Go module) into bin/emissary/<version> (once).

# ---- Releasing (docs/releasing.md) ----

# make release: everything a release publishes, built offline into dist/:
#   emissary-istio-webhook-<VERSION>-<os>-<arch>           the CLI (and server), static;
#   emissary-istio-webhook-<VERSION>-<os>-<arch>.cdx.json  its SBOM (CycloneDX), one per binary;
#   emissary-istio-webhook-linux-<arch>.tar, .oci.tar      `make image`'s archives;
#   emissary-istio-webhook-<VERSION without v>.tgz         the chart, packaged by helm;
#   SHA256SUMS                                             sha256sum's format, every file above.
# The linux binaries are the image's (same flags: bin/image/<os>-<arch>/webhook), not rebuilt.
# test/release checks every file, and pushes and pulls back what `make publish` pushes.
DIST          := dist
CLI_PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64
CLI_NAME      := emissary-istio-webhook-$(VERSION)
CHART_DIR     := charts/emissary-istio-webhook
CHART_VERSION := $(VERSION:v%=%)
CYCLONEDX     := $(TOOLS_BIN)/cyclonedx-gomod
CRANE         := $(TOOLS_BIN)/crane

# cyclonedx-gomod writes the SBOMs from the binaries' build information (its bin mode reads
# what `go version -m` reports).
$(CYCLONEDX): hack/tools/cyclonedx/go.mod hack/tools/cyclonedx/go.sum
	@mkdir -p $(TOOLS_BIN)
	cd hack/tools/cyclonedx && CGO_ENABLED=0 go build -trimpath -o $@ github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod

# crane (go-containerregistry's) pushes the image's OCI layout, all platforms in one index.
$(CRANE): hack/tools/crane/go.mod hack/tools/crane/go.sum
	@mkdir -p $(TOOLS_BIN)
	cd hack/tools/crane && CGO_ENABLED=0 go build -trimpath -o $@ github.com/google/go-containerregistry/cmd/crane

.PHONY: release
release: image $(HELM) $(CYCLONEDX) ## Build everything a release publishes into dist/: CLIs, image archives, chart, SBOMs, SHA256SUMS.
	rm -rf $(DIST) && mkdir -p $(DIST)
	@for p in $(CLI_PLATFORMS); do \
		out=$(DIST)/$(CLI_NAME)-$${p%/*}-$${p#*/}; \
		if [[ " $(IMAGE_PLATFORMS) " == *" $$p "* ]]; then \
			echo ">> $$out: the image's binary"; cp bin/image/$${p%/*}-$${p#*/}/webhook $$out; \
		else \
			echo ">> go build $$p"; \
			CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} go build -trimpath -ldflags "$(IMAGE_LDFLAGS)" -o $$out ./cmd/webhook; \
		fi; \
		$(CYCLONEDX) bin -json -noserial -notimestamp -version $(VERSION) -output $$out.cdx.json $$out; \
	done
	cp bin/image/*.tar $(DIST)/
	$(HELM) package $(CHART_DIR) --version $(CHART_VERSION) --app-version $(VERSION) --destination $(DIST)
	cd $(DIST) && sha256sum $$(ls | grep -vx SHA256SUMS) > SHA256SUMS
	@cat $(DIST)/SHA256SUMS

.PHONY: print-version
print-version: ## Print the Makefile's VERSION.
	@echo $(VERSION)

# The release workflow runs `make check-version TAG=<the tag>` first.
.PHONY: check-version
check-version: ## Check that VERSION stamps the chart, manifests/base and the image (and equals TAG when given).
	@if [ -n "$(TAG)" ] && [ "$(TAG)" != "$(VERSION)" ]; then \
		echo "the tag $(TAG) is not the Makefile's VERSION $(VERSION)"; exit 1; fi
	go test -count=1 -run '^TestVersionAgrees$$' ./test/image/

# make publish: push dist/'s image (all platforms, one index, tagged VERSION) to PUBLISH_IMAGE
# (IMAGE unless set) and its
# chart to CHART_REPO (helm push: CHART_REPO/emissary-istio-webhook:<chart version>), with the
# credentials of ~/.docker/config.json (docker login; helm reads it too). It writes the
# digest references, which the release workflow signs, into bin/publish/refs (image=, chart=).
# PLAIN_HTTP=1 for a registry without TLS (test/release's).
PUBLISH_IMAGE ?= $(IMAGE)
CHART_REPO    ?= oci://ghcr.io/emissary-istio/charts
PLAIN_HTTP    ?=

.PHONY: publish
publish: $(HELM) $(CRANE) ## Push dist/'s image to PUBLISH_IMAGE and chart to CHART_REPO (after make release); write bin/publish/refs.
	cd $(DIST) && sha256sum --check --strict --quiet SHA256SUMS
	rm -rf bin/publish && mkdir -p bin/publish/layout
	tar -xf $(DIST)/$(notdir $(IMAGE)).oci.tar -C bin/publish/layout
	$(CRANE) push $(if $(PLAIN_HTTP),--insecure) bin/publish/layout $(PUBLISH_IMAGE):$(VERSION) --image-refs bin/publish/image
	$(HELM) push $(DIST)/$(notdir $(CHART_DIR))-$(CHART_VERSION).tgz $(CHART_REPO) $(if $(PLAIN_HTTP),--plain-http) 2>&1 | tee bin/publish/helm-push.log
	@digest=$$(sed -n 's/^Digest: //p' bin/publish/helm-push.log); test -n "$$digest" || { echo "helm push printed no digest"; exit 1; }; \
		{ echo "image=$$(cat bin/publish/image)"; echo "chart=$(CHART_REPO:oci://%=%)/$(notdir $(CHART_DIR))@$$digest"; } > bin/publish/refs
	@cat bin/publish/refs

# `make test` also tests the image (test/image), the chart with the real helm, the
# dashboard's PromQL, Emissary's own chart and manifests, the GitOps engines' verdicts
# (test/envtest) and the certificates from cert-manager's controllers (test/ha): build or
# fetch what they run first (here, after the variables they name).
test: release $(HELM) $(TOOLS_BIN)/promql $(EMISSARY_DIR)/.released $(TOOLS_BIN)/fluxdiff $(TOOLS_BIN)/argodiff \
	$(TOOLS_BIN)/cert-manager-controller $(CRANE)
