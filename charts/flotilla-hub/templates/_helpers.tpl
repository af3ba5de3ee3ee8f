{{/* Names and labels shared by the hub chart's templates. */}}

{{- define "flotilla-hub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flotilla-hub.fullname" -}}
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

{{- define "flotilla-hub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flotilla-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "flotilla-hub.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "flotilla-hub.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: hub
{{- end }}

{{/* host:port spokes and the CLI dial. */}}
{{- define "flotilla-hub.advertise" -}}
{{- if .Values.advertise }}
{{- .Values.advertise }}
{{- else }}
{{- printf "%s.%s.svc:%d" (include "flotilla-hub.fullname" .) .Release.Namespace (int .Values.grpc.port) }}
{{- end }}
{{- end }}

{{- define "flotilla-hub.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The data dir is a folder inside the volume, not its root: the hub keeps it 0700, while
the volume's root keeps the group and mode that fsGroup gives it, so that
fsGroupChangePolicy OnRootMismatch never walks the keys.
*/}}
{{- define "flotilla-hub.dataDir" -}}
/var/lib/flotilla/hub
{{- end }}

{{/* The namespace Kubernetes mode reads its configuration from. */}}
{{- define "flotilla-hub.configNamespace" -}}
{{- .Values.kubernetesMode.namespace | default .Release.Namespace -}}
{{- end -}}

{{/* `--store=...` for init and run: etcd's endpoints, or nothing (redb in the data dir). */}}
{{- define "flotilla-hub.storeArg" -}}
{{- with .Values.store.etcd.endpoints }}--store=etcd://{{ join "," . }}{{ end }}
{{- end -}}

{{/*
Replicas need the store and the CA to be shared: one process per redb store, and one CA
that every spoke trusts. values.schema.json refuses the same; this also holds where the
schema is skipped.
*/}}
{{- define "flotilla-hub.checkReplicas" -}}
{{- if gt (int .Values.replicas) 1 }}
{{- if not .Values.store.etcd.endpoints }}
{{- fail (printf "replicas: %d needs store.etcd.endpoints: the embedded redb store admits one process (docs/operations.md, High availability)" (int .Values.replicas)) }}
{{- end }}
{{- if not .Values.pki.existingSecret }}
{{- fail (printf "replicas: %d needs pki.existingSecret: without it each pod's init container makes its own CA (docs/operations.md, High availability)" (int .Values.replicas)) }}
{{- end }}
{{- end }}
{{- end -}}
