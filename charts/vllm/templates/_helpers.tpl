{{/*
Chart name, `nameOverride` wins.
*/}}
{{- define "vllm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the objects: `fullnameOverride` wins (default `vllm-server`, the established name); otherwise the release
name when it already contains the chart name, else `<release>-<chart>`. Truncated to 63 characters (DNS label).
*/}}
{{- define "vllm.fullname" -}}
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
{{- define "vllm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: only name and instance, so they never change across upgrades.
*/}}
{{- define "vllm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vllm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Image tag: `image.tag`, else the chart's appVersion.
*/}}
{{- define "vllm.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
Common labels: the standard ones plus `commonLabels`. The standard labels win over `commonLabels`.
*/}}
{{- define "vllm.labels" -}}
{{- $std := dict
  "helm.sh/chart" (include "vllm.chart" .)
  "app.kubernetes.io/name" (include "vllm.name" .)
  "app.kubernetes.io/instance" .Release.Name
  "app.kubernetes.io/version" (regexReplaceAll "[^-A-Za-z0-9_.]" (include "vllm.imageTag" .) "_" | trunc 63 | trimAll "-_.")
  "app.kubernetes.io/managed-by" .Release.Service
  "app.kubernetes.io/component" "inference"
-}}
{{- toYaml (merge $std (.Values.commonLabels | default dict)) }}
{{- end }}

{{/*
Pod template labels: the common labels plus `podLabels` (which cannot replace the selector labels).
*/}}
{{- define "vllm.podLabels" -}}
{{- $labels := include "vllm.labels" . | fromYaml -}}
{{- toYaml (merge $labels (.Values.podLabels | default dict)) }}
{{- end }}

{{/*
Name of the ServiceAccount the pod uses.
*/}}
{{- define "vllm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vllm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the Service (`service.name`, else the full name).
*/}}
{{- define "vllm.serviceName" -}}
{{- default (include "vllm.fullname" .) .Values.service.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the claim that holds /root/.vllm.
*/}}
{{- define "vllm.claimName" -}}
{{- default (include "vllm.fullname" .) .Values.persistence.existingClaim }}
{{- end }}

{{/*
An httpGet probe from a probe value (`enabled` plus timings). Call with (dict "probe" .Values.x "path" "/").
*/}}
{{- define "vllm.httpProbe" -}}
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
Served model name: `model.servedModelName`, else `model.name`.
*/}}
{{- define "vllm.servedModelName" -}}
{{- default .Values.model.name .Values.model.servedModelName }}
{{- end }}

{{/*
Name of the cache claim (type persistentVolumeClaim).
*/}}
{{- define "vllm.cacheClaimName" -}}
{{- default (printf "%s-cache" (include "vllm.fullname" .) | trunc 63 | trimSuffix "-") .Values.cache.existingClaim }}
{{- end }}

{{/*
Container args built from `model` and `extraArgs` (the image's entrypoint is `vllm serve`).
*/}}
{{- define "vllm.args" -}}
{{- $m := .Values.model -}}
{{- $args := list "--model" $m.name "--served-model-name" (include "vllm.servedModelName" .) "--port" "8000" -}}
{{- if $m.maxModelLen }}{{ $args = concat $args (list "--max-model-len" (toString (int $m.maxModelLen))) }}{{ end -}}
{{- $args = concat $args (list "--gpu-memory-utilization" (toString $m.gpuMemoryUtilization)) -}}
{{- if $m.quantization }}{{ $args = concat $args (list "--quantization" $m.quantization) }}{{ end -}}
{{- if $m.enforceEager }}{{ $args = append $args "--enforce-eager" }}{{ end -}}
{{- range .Values.extraArgs }}{{ $args = append $args (toString .) }}{{ end -}}
{{- toYaml $args }}
{{- end }}

{{/*
Container env: HF_TOKEN from the existing Secret `hfToken.secretName` (if set), then `extraEnv`. An `extraEnv`
entry with the same name replaces the chart's entry.
*/}}
{{- define "vllm.env" -}}
{{- $extraNames := list -}}
{{- range .Values.extraEnv }}{{ $extraNames = append $extraNames .name }}{{ end -}}
{{- $env := list -}}
{{- if and .Values.hfToken.secretName (not (has "HF_TOKEN" $extraNames)) -}}
{{- $ref := dict "name" .Values.hfToken.secretName "key" .Values.hfToken.secretKey -}}
{{- $env = append $env (dict "name" "HF_TOKEN" "valueFrom" (dict "secretKeyRef" $ref)) -}}
{{- end -}}
{{- with (concat $env (.Values.extraEnv | default list)) }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
Container resources: `resources` with `gpu.count` GPUs added to the limits.
*/}}
{{- define "vllm.resources" -}}
{{- $res := deepCopy (.Values.resources | default dict) -}}
{{- if gt (int .Values.gpu.count) 0 -}}
{{- $limits := get $res "limits" | default dict -}}
{{- $_ := set $limits .Values.gpu.resourceName (int .Values.gpu.count) -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- with $res }}{{ toYaml . }}{{ end }}
{{- end }}

{{/*
The container's lifecycle: a `preStop` hook with the `sleep` action (Kubernetes 1.30+, no binary needed in the
image) of `preStopSleepSeconds`, nothing when it is 0. Refuses a delay that is not shorter than
`terminationGracePeriodSeconds`: the grace period counts from the Pod's deletion, the delay included.
*/}}
{{- define "vllm.lifecycle" -}}
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
