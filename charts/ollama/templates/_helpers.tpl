{{/*
Name of the claim that holds /root/.ollama.
*/}}
{{- define "ollama.claimName" -}}
{{- default (include "common.fullname" .) .Values.persistence.existingClaim }}
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
