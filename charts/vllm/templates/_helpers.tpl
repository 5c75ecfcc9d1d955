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
{{- default (printf "%s-cache" (include "common.fullname" .) | trunc 63 | trimSuffix "-") .Values.cache.existingClaim }}
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
