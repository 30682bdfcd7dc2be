{{/*
The chart's name (app.kubernetes.io/name), at most 63 characters.
*/}}
{{- define "dind-injector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every object the chart creates (and the prefix of the derived ones: -config, -tls,
-certs). A release named dind-injector (the documented install) gives dind-injector, the name
the kustomize manifests use and the injector's own defaults.
*/}}
{{- define "dind-injector.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* helm.sh/chart: name-version. */}}
{{- define "dind-injector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object: the name label the manifests carry, Helm's conventional labels, and
commonLabels.
*/}}
{{- define "dind-injector.labels" -}}
app.kubernetes.io/name: {{ include "dind-injector.name" . }}
helm.sh/chart: {{ include "dind-injector.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The injector's pods. The same selector as the manifests (no instance label): a Deployment's
selector is immutable, and this one must select the pods of either install path.
*/}}
{{- define "dind-injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dind-injector.name" . }}
app.kubernetes.io/component: webhook
{{- end }}

{{/* metadata.annotations (indented under metadata) of every object, when commonAnnotations has any. */}}
{{- define "dind-injector.annotations" -}}
{{- with .Values.commonAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}

{{- define "dind-injector.tlsSecret" -}}
{{- printf "%s-tls" (include "dind-injector.fullname" .) }}
{{- end }}

{{- define "dind-injector.configMap" -}}
{{- printf "%s-config" (include "dind-injector.fullname" .) }}
{{- end }}

{{- define "dind-injector.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Both webhooks: opted-in namespaces only, never the excluded ones nor the injector's own, and
the extra terms of webhooks.namespaceSelector.matchExpressions (ANDed).
*/}}
{{- define "dind-injector.namespaceSelector" -}}
{{- $level := "" -}}
{{- if kindIs "slice" . }}{{ $level = index . 1 }}{{ end -}}
{{- $ := . -}}
{{- if kindIs "slice" . }}{{ $ = index . 0 }}{{ end -}}
namespaceSelector:
  matchExpressions:
  - key: dind-injector.io/injection
    operator: In
    values: [enabled]
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values:
    {{- range (concat $.Values.webhooks.excludedNamespaces (list $.Release.Namespace) | uniq) }}
    - {{ . | quote }}
    {{- end }}
  {{- if $level }}
  - key: dind-injector.io/pod-security
    operator: {{ $level }}
    values: [restricted]
  {{- end }}
  {{- with $.Values.webhooks.namespaceSelector.matchExpressions }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* clientConfig of one webhook; the argument is (list $ "/path"). */}}
{{- define "dind-injector.clientConfig" -}}
{{- $ := index . 0 -}}
clientConfig:
  service:
    name: {{ include "dind-injector.fullname" $ }}
    namespace: {{ $.Release.Namespace }}
    path: {{ index . 1 }}
    port: 443
{{- end }}

{{/* metadata of both webhook configurations (cert-manager adds its CA injection annotation). */}}
{{- define "dind-injector.webhookMetadata" -}}
name: {{ include "dind-injector.fullname" . }}
labels:
  {{- include "dind-injector.labels" . | nindent 2 }}
{{- $annotations := deepCopy (.Values.commonAnnotations | default dict) }}
{{- if eq .Values.certificates.mode "certManager" }}
{{- /* cert-manager's CA injector copies the serving Certificate's ca.crt into caBundle. */}}
{{- $_ := set $annotations "cert-manager.io/inject-ca-from" (printf "%s/%s" .Release.Namespace (include "dind-injector.fullname" .)) }}
{{- end }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
