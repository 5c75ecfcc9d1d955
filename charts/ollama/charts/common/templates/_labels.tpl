{{/*
Image tag: `image.tag`, else the chart's appVersion. The `app.kubernetes.io/version` label is made from it.
*/}}
{{- define "common.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
Selector labels: only name and instance, so they never change across upgrades (a Deployment's selector cannot).
*/}}
{{- define "common.selectorLabels" -}}
app.kubernetes.io/name: {{ include "common.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels: the standard ones plus `commonLabels`; the standard labels win over `commonLabels`.
`app.kubernetes.io/component` is the including chart's annotation `homelab.inference/component` in its Chart.yaml
(`inference` for ollama and vllm, `router` for litellm); without it the label is left out.
*/}}
{{- define "common.labels" -}}
{{- $std := dict
  "helm.sh/chart" (include "common.chart" .)
  "app.kubernetes.io/name" (include "common.name" .)
  "app.kubernetes.io/instance" .Release.Name
  "app.kubernetes.io/version" (regexReplaceAll "[^-A-Za-z0-9_.]" (include "common.imageTag" .) "_" | trunc 63 | trimAll "-_.")
  "app.kubernetes.io/managed-by" .Release.Service
-}}
{{- with index (.Chart.Annotations | default dict) "homelab.inference/component" }}
{{- $_ := set $std "app.kubernetes.io/component" . }}
{{- end }}
{{- toYaml (merge $std (.Values.commonLabels | default dict)) }}
{{- end }}

{{/*
Pod template labels: the common labels plus `podLabels` (which cannot replace the selector labels).
*/}}
{{- define "common.podLabels" -}}
{{- $labels := include "common.labels" . | fromYaml -}}
{{- toYaml (merge $labels (.Values.podLabels | default dict)) }}
{{- end }}
