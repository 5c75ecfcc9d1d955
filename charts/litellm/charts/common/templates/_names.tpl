{{/*
Names of the library. Every template here takes the including chart's root context (`.`), so `.Chart`, `.Values`
and `.Release` are the chart's own: `include "common.fullname" .`
*/}}

{{/*
Chart name, `nameOverride` wins.
*/}}
{{- define "common.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the objects: `fullnameOverride` wins (each chart's default keeps its established name); otherwise the
release name when it already contains the chart name, else `<release>-<chart>`. Truncated to 63 characters (DNS
label).
*/}}
{{- define "common.fullname" -}}
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

{{/*
Chart name and version for the `helm.sh/chart` label.
*/}}
{{- define "common.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the Service (`service.name`, else the full name).
*/}}
{{- define "common.serviceName" -}}
{{- default (include "common.fullname" .) .Values.service.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the ServiceAccount the pod uses: `serviceAccount.name`, else the full name when the chart creates it,
else `default`.
*/}}
{{- define "common.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "common.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}
