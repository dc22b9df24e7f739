{{/* Chart name. */}}
{{- define "tradestore-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name when it already contains the chart name. */}}
{{- define "tradestore-operator.fullname" -}}
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

{{- define "tradestore-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tradestore-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tradestore-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tradestore-operator.labels" -}}
helm.sh/chart: {{ include "tradestore-operator.chart" . }}
{{ include "tradestore-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tradestore-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tradestore-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespaces the operator watches: watchNamespaces, or (namespace scope) the release namespace. */}}
{{- define "tradestore-operator.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- join "," .Values.watchNamespaces }}
{{- else if eq .Values.rbac.scope "namespace" }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "tradestore-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if eq $tag "latest" }}{{ fail "image.tag: pin a version instead of latest" }}{{ end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/*
The sidecar image of the same build as the operator image: e2e/images.sh tags both
<prefix>/{operator,sidecar}:<version>-g<git hash>, so the NOTES name a tag that exists.
*/}}
{{- define "tradestore-operator.sidecarImage" -}}
{{- $repo := .Values.image.repository }}
{{- $sidecar := ternary (printf "%s/sidecar" (dir $repo)) "sidecar" (contains "/" $repo) }}
{{- printf "%s:%s" $sidecar (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The permissions the operator needs on the namespaced TradeStore resources, derived from the API
calls in operator/src (see docs/helm.md, "RBAC"). Shared by the ClusterRole and the Roles.
*/}}
{{- define "tradestore-operator.rules" -}}
# Watched with a controller; finalizer added/removed with a merge patch.
- apiGroups: ["tradestore.io"]
  resources: ["tradestores"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["tradestore.io"]
  resources: ["tradestores/status"]
  verbs: ["patch"]
# Owner references with blockOwnerDeletion (OwnerReferencesPermissionEnforcement).
- apiGroups: ["tradestore.io"]
  resources: ["tradestores/finalizers"]
  verbs: ["update"]
# The store's pod: watched (owned), server-side applied, deleted on rollout/fence/delete.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The data volume: read, server-side applied, resized, owner reference removed (Retain) or deleted.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create", "patch", "delete"]
# ConfigMap and Service: server-side apply only (garbage collection removes them).
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["create", "patch"]
# The API token Secret: created once, then only read.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
