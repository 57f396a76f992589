# syntax=docker/dockerfile:1
# The webhook's image, for people with Docker (BuildKit):
#
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=v0.2.0 \
#     -t ghcr.io/emissary-istio/emissary-istio-webhook:v0.2.0 .
#
# `make image` builds the same image without Docker (hack/image); test/image checks that this
# file's final stage and that image agree. VERSION must be the Makefile's.

# The build runs on the builder's own platform and cross-compiles (Go needs no emulation).
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY cmd/ cmd/
COPY pkg/ pkg/
COPY certs/ certs/
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X github.com/emissary-istio/emissary-istio-webhook/pkg/inject.Version=${VERSION}" \
      -o /out/webhook ./cmd/webhook

# Nothing but the static binary: no shell, no package manager, no libc.
FROM scratch
ARG VERSION=dev
ARG REVISION=""
LABEL org.opencontainers.image.title="emissary-istio-webhook" \
      org.opencontainers.image.description="Mutating admission webhook that integrates Emissary-ingress with Istio" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/emissary-istio/emissary-istio-webhook" \
      org.opencontainers.image.url="https://github.com/emissary-istio/emissary-istio-webhook" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/webhook /webhook
# HTTPS (admission), metrics, probes.
EXPOSE 9443/tcp 8080/tcp 8081/tcp
# distroless' "nonroot"; the manifests and the chart run the pod as 65532 too.
USER 65532:65532
ENTRYPOINT ["/webhook"]
