{{/* Chart name. */}}
{{- define "serviceradar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name prefix: release + chart, unless overridden. */}}
{{- define "serviceradar.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "serviceradar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "serviceradar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector of the core pods. */}}
{{- define "serviceradar.coreSelector" -}}
app.kubernetes.io/name: {{ include "serviceradar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: core
{{- end -}}

{{/* Selector of the hub pod. */}}
{{- define "serviceradar.hubSelector" -}}
app.kubernetes.io/name: {{ include "serviceradar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: hub
{{- end -}}

{{/* The core image. */}}
{{- define "serviceradar.coreImage" -}}
{{ .Values.core.image.repository }}:{{ .Values.core.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The DNS name of hub node N (the StatefulSet's pod N). */}}
{{- define "serviceradar.hubNodeHost" -}}
{{ include "serviceradar.fullname" .root }}-hub-{{ .node }}.{{ include "serviceradar.fullname" .root }}-hub-headless.{{ .root.Release.Namespace }}.svc
{{- end -}}

{{/* The hub's client URL(s) serviceradar-core connects to: the Service of
one node, or every node of a cluster (streams then get 3 replicas). */}}
{{- define "serviceradar.hubClientUrl" -}}
{{- if gt (int .Values.hub.replicas) 1 -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.hub.replicas) -}}
{{- $urls = append $urls (printf "nats://%s:%d" (include "serviceradar.hubNodeHost" (dict "root" $ "node" $i)) (int $.Values.hub.clientPort)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
nats://{{ include "serviceradar.fullname" . }}-hub:{{ .Values.hub.clientPort }}
{{- end -}}
{{- end -}}

{{/* Database and master key: the environment serve and admin share. */}}
{{- define "serviceradar.storeEnv" -}}
- name: SERVICERADAR_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.urlKey }}
- name: SERVICERADAR_DATABASE_MAX_CONNECTIONS
  value: {{ .Values.database.maxConnections | quote }}
- name: SERVICERADAR_MASTER_KEY_FILE
  value: /etc/serviceradar/master-key/{{ .Values.masterKey.key }}
- name: SERVICERADAR_DATA_DIR
  value: /var/lib/serviceradar
{{- end -}}
