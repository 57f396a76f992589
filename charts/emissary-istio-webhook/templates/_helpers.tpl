{{/* The chart's name, or nameOverride. */}}
{{- define "emissary-istio-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every object: fullnameOverride, else the release name when it contains the
chart's name, else <release>-<name>. It is also a Service name, so a DNS label (63).
*/}}
{{- define "emissary-istio-webhook.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "emissary-istio-webhook.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The metrics Service's name: also a DNS label. */}}
{{- define "emissary-istio-webhook.metricsService" -}}
{{- printf "%s-metrics" (include "emissary-istio-webhook.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "emissary-istio-webhook.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "emissary-istio-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: emissary-istio-webhook
{{- end }}

{{/* The webhook's pods: the Deployment's selector, the Services', the PDB's. */}}
{{- define "emissary-istio-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "emissary-istio-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "emissary-istio-webhook.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The configuration file: the config values with the file's apiVersion and kind. */}}
{{- define "emissary-istio-webhook.config" -}}
{{- $file := dict "apiVersion" "emissary-istio.io/v1alpha1" "kind" "WebhookConfig" }}
{{- toYaml (merge $file (deepCopy .Values.config)) }}
{{- end }}

{{- define "emissary-istio-webhook.selfSigned" -}}
{{- if eq .Values.tls.mode "self-signed" }}true{{ end }}
{{- end }}

{{/* The serving Certificate's name: inject-ca-from names it. */}}
{{- define "emissary-istio-webhook.servingCertificate" -}}
{{- printf "%s-serving" (include "emissary-istio-webhook.fullname" .) }}
{{- end }}

{{/* The prometheus.io/* scrape annotations, for the metrics Service and the pods. */}}
{{- define "emissary-istio-webhook.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: "8080"
prometheus.io/path: /metrics
{{- end }}

{{/*
config.emissaryImages, or the webhook's default (pkg/inject DefaultEmissaryImages).
*/}}
{{- define "emissary-istio-webhook.emissaryImages" -}}
{{- if hasKey .Values.config "emissaryImages" }}
{{- toJson .Values.config.emissaryImages }}
{{- else }}
{{- toJson (list "emissary" "emissary-ingress" "ambassador" "aes" "ambassador-edge-stack") }}
{{- end }}
{{- end }}

{{/*
The matchConditions' regular expressions for emissaryImages: what pkg/inject ImageRegexp and
NameRegexp compute (a test compares them). In a pattern's last path element a wildcard stops
at ':' and '@', where a tag or a digest starts; "(a^)" matches nothing.
*/}}
{{- define "emissary-istio-webhook.imageRegexp" -}}
{{- $alts := list }}
{{- range (include "emissary-istio-webhook.emissaryImages" . | fromJsonArray) }}
{{- $elems := splitList "/" . }}
{{- $last := last $elems | replace "." "[.]" | replace "*" "[^/:@]*" | replace "?" "[^/:@]" }}
{{- $init := initial $elems | join "/" | replace "." "[.]" | replace "*" "[^/]*" | replace "?" "[^/]" }}
{{- $alts = append $alts (ternary $last (printf "%s/%s" $init $last) (eq (len $elems) 1)) }}
{{- end }}
{{- printf "(^|/)(%s)([:@][^/]*)?$" (ternary "a^" (join "|" $alts) (empty $alts)) }}
{{- end }}

{{- define "emissary-istio-webhook.nameRegexp" -}}
{{- $alts := list }}
{{- range (include "emissary-istio-webhook.emissaryImages" . | fromJsonArray) }}
{{- $last := last (splitList "/" .) }}
{{- if trimAll "*?" $last }}
{{- $alts = append $alts ($last | replace "." "[.]" | replace "*" "[^/]*" | replace "?" "[^/]") }}
{{- end }}
{{- end }}
{{- printf "^(%s)$" (ternary "a^" (join "|" $alts) (empty $alts)) }}
{{- end }}

{{/*
--self-signed: how many CAs the caBundle keeps. Every live replica's CA must fit, during a
rolling update (replicaCount + maxSurge 1 pods) and a renewal (each pod's old and new CA):
2 x (replicaCount + 1), and never fewer than the webhook's default, 10.
*/}}
{{- define "emissary-istio-webhook.maxBundleCAs" -}}
{{- max 10 (mul 2 (add1 (int .Values.replicaCount))) }}
{{- end }}

{{/* The name of the helm test's objects, and of the namespace it creates and deletes. */}}
{{- define "emissary-istio-webhook.selftest" -}}
{{- printf "%s-selftest" (include "emissary-istio-webhook.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* A map of labels as k1=v1,k2=v2, sorted by key. */}}
{{- define "emissary-istio-webhook.labelList" -}}
{{- $pairs := list }}
{{- range $k, $v := . }}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}
