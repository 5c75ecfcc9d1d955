{{/*
Chart name, `nameOverride` wins.
*/}}
{{- define "ollama.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the objects: `fullnameOverride` wins (default `ollama`, the established name); otherwise the release
name when it already contains the chart name, else `<release>-<chart>`. Truncated to 63 characters (DNS label).
*/}}
{{- define "ollama.fullname" -}}
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
{{- define "ollama.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: only name and instance, so they never change across upgrades.
*/}}
{{- define "ollama.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ollama.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Image tag: `image.tag`, else the chart's appVersion.
*/}}
{{- define "ollama.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
Common labels: the standard ones plus `commonLabels`. The standard labels win over `commonLabels`.
*/}}
{{- define "ollama.labels" -}}
{{- $std := dict
  "helm.sh/chart" (include "ollama.chart" .)
  "app.kubernetes.io/name" (include "ollama.name" .)
  "app.kubernetes.io/instance" .Release.Name
  "app.kubernetes.io/version" (regexReplaceAll "[^-A-Za-z0-9_.]" (include "ollama.imageTag" .) "_" | trunc 63 | trimAll "-_.")
  "app.kubernetes.io/managed-by" .Release.Service
  "app.kubernetes.io/component" "inference"
-}}
{{- toYaml (merge $std (.Values.commonLabels | default dict)) }}
{{- end }}

{{/*
Pod template labels: the common labels plus `podLabels` (which cannot replace the selector labels).
*/}}
{{- define "ollama.podLabels" -}}
{{- $labels := include "ollama.labels" . | fromYaml -}}
{{- toYaml (merge $labels (.Values.podLabels | default dict)) }}
{{- end }}

{{/*
Name of the ServiceAccount the pod uses.
*/}}
{{- define "ollama.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ollama.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the Service (`service.name`, else the full name).
*/}}
{{- define "ollama.serviceName" -}}
{{- default (include "ollama.fullname" .) .Values.service.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the claim that holds /root/.ollama.
*/}}
{{- define "ollama.claimName" -}}
{{- default (include "ollama.fullname" .) .Values.persistence.existingClaim }}
{{- end }}

{{/*
An httpGet probe from a probe value (`enabled` plus timings). Call with (dict "probe" .Values.x "path" "/").
*/}}
{{- define "ollama.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: http
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
successThreshold: {{ .probe.successThreshold }}
{{- end }}

{{/*
Container env: the chart's OLLAMA_* settings, then `extraEnv`. An `extraEnv` entry with the same name replaces the
chart's entry, so every name appears once.
*/}}
{{- define "ollama.env" -}}
{{- $extraNames := list -}}
{{- range .Values.extraEnv }}{{ $extraNames = append $extraNames .name }}{{ end -}}
{{- $managed := list
  (dict "name" "OLLAMA_HOST" "value" "0.0.0.0:11434")
  (dict "name" "OLLAMA_KEEP_ALIVE" "value" (toString .Values.ollama.keepAlive))
  (dict "name" "OLLAMA_LOAD_TIMEOUT" "value" (toString .Values.ollama.loadTimeout))
  (dict "name" "OLLAMA_NUM_PARALLEL" "value" (toString (int .Values.ollama.numParallel)))
  (dict "name" "OLLAMA_MAX_LOADED_MODELS" "value" (toString (int .Values.ollama.maxLoadedModels)))
-}}
{{- $env := list -}}
{{- range $managed }}{{ if not (has .name $extraNames) }}{{ $env = append $env . }}{{ end }}{{ end -}}
{{- toYaml (concat $env (.Values.extraEnv | default list)) }}
{{- end }}

{{/*
The container's lifecycle: a `preStop` hook with the `sleep` action (Kubernetes 1.30+, no binary needed in the
image) of `preStopSleepSeconds`, nothing when it is 0. Refuses a delay that is not shorter than
`terminationGracePeriodSeconds`: the grace period counts from the Pod's deletion, the delay included.
*/}}
{{- define "ollama.lifecycle" -}}
{{- $sleep := int .Values.preStopSleepSeconds -}}
{{- $grace := int .Values.terminationGracePeriodSeconds -}}
{{- if gt $sleep 0 -}}
{{- if ge $sleep $grace -}}
{{- fail (printf "preStopSleepSeconds (%d) must be shorter than terminationGracePeriodSeconds (%d): the grace period counts from the Pod's deletion, the preStop delay included, and the container needs time after its SIGTERM to finish the requests in flight" $sleep $grace) -}}
{{- end -}}
preStop:
  sleep:
    seconds: {{ $sleep }}
{{- end -}}
{{- end -}}
