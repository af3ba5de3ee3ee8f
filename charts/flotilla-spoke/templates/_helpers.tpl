{{/* Names and labels shared by the spoke chart's templates. */}}

{{- define "flotilla-spoke.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flotilla-spoke.fullname" -}}
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

{{- define "flotilla-spoke.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flotilla-spoke.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "flotilla-spoke.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "flotilla-spoke.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: spoke
{{- end }}

{{- define "flotilla-spoke.serviceAccountName" -}}
{{- default (include "flotilla-spoke.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* The Secret holding the join string, or nothing when none is given. */}}
{{- define "flotilla-spoke.joinSecret" -}}
{{- if .Values.join.existingSecret }}
{{- .Values.join.existingSecret }}
{{- else if .Values.join.value }}
{{- printf "%s-join" (include "flotilla-spoke.fullname" .) }}
{{- end }}
{{- end }}

{{/* Whether any policy is set. */}}
{{- define "flotilla-spoke.hasPolicy" -}}
{{- with .Values.policy }}
{{- if or .allowNamespaces .denyNamespaces .denyKinds .denyBindingsToClusterRoles }}true{{ end }}
{{- end }}
{{- end }}

{{/*
The namespace the spoke keeps its inventory ConfigMaps and Events in: fixed by the spoke
(INVENTORY_NAMESPACE), whatever the release's namespace.
*/}}
{{- define "flotilla-spoke.inventoryNamespace" -}}
flotilla-system
{{- end }}
