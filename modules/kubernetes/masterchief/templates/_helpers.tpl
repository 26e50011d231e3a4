{{/* Chart name, overridable. */}}
{{- define "masterchief.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name: at most 63 characters (a DNS label). */}}
{{- define "masterchief.fullname" -}}
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

{{- define "masterchief.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "masterchief.selectorLabels" -}}
app.kubernetes.io/name: {{ include "masterchief.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "masterchief.labels" -}}
helm.sh/chart: {{ include "masterchief.chart" . }}
{{ include "masterchief.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "masterchief.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "masterchief.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* image_tag (deploy parameter) > image.tag > appVersion. */}}
{{- define "masterchief.image" -}}
{{- $tag := .Values.image_tag | default .Values.image.tag | default .Chart.AppVersion -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{- define "masterchief.claimName" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-var" (include "masterchief.fullname" .)) -}}
{{- end -}}
