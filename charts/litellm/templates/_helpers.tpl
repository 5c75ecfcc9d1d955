{{/*
Name of the ConfigMap with config.yaml: `configMap.name`, else `<fullname>-config`.
*/}}
{{- define "litellm.configMapName" -}}
{{- default (printf "%s-config" (include "common.fullname" .)) .Values.configMap.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Keys whose values are secrets (case-insensitive): they must be `os.environ/VAR` references in the config.
Not every `*_token` key is one (`input_cost_per_token` is a price), so only known token kinds match.
*/}}
{{- define "litellm.secretKeyPattern" -}}
(?i)^(master_key|api_key|salt_key|database_url|password|secret|token)$|(_api_key|_secret|_secret_key|_secret_access_key|_password|_credentials|(access|auth|bearer|session|refresh|hf|api|bot)_token)$
{{- end }}

{{/*
Walk the config and fail on any secret-looking key whose value is not an `os.environ/...` string.
Call with (dict "path" "config" "value" .Values.config "pattern" (include "litellm.secretKeyPattern" .)).
*/}}
{{- define "litellm.assertNoLiteralSecrets" -}}
{{- $pattern := .pattern -}}
{{- if kindIs "map" .value -}}
{{- range $k, $v := .value -}}
{{- $path := printf "%s.%s" $.path $k -}}
{{- if and (regexMatch $pattern $k) (not (kindIs "invalid" $v)) -}}
{{- if not (and (kindIs "string" $v) (hasPrefix "os.environ/" $v)) -}}
{{- fail (printf "%s must be an os.environ/VAR reference, not a literal value: secrets never go into the ConfigMap; put them in a Secret (masterKeySecret, extraEnvFromSecrets) and write e.g. %s: os.environ/%s" $path $k (upper $k)) -}}
{{- end -}}
{{- end -}}
{{- include "litellm.assertNoLiteralSecrets" (dict "path" $path "value" $v "pattern" $pattern) -}}
{{- end -}}
{{- else if kindIs "slice" .value -}}
{{- range $i, $v := .value -}}
{{- include "litellm.assertNoLiteralSecrets" (dict "path" (printf "%s[%d]" $.path $i) "value" $v "pattern" $pattern) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
The rendered config.yaml (after the literal-secret check). The checksum annotation hashes this text.
*/}}
{{- define "litellm.configYaml" -}}
{{- include "litellm.assertNoLiteralSecrets" (dict "path" "config" "value" .Values.config "pattern" (include "litellm.secretKeyPattern" .)) -}}
{{- toYaml .Values.config }}
{{- end }}

{{/*
Container env: LITELLM_MASTER_KEY from `masterKeySecret`, then `extraEnv`. An `extraEnv` entry with the same name
replaces the chart's entry. A secret-looking `extraEnv` name with a literal `value` is refused.
*/}}
{{- define "litellm.env" -}}
{{- $extraNames := list -}}
{{- range .Values.extraEnv -}}
{{- $extraNames = append $extraNames .name -}}
{{- if and (hasKey . "value") (regexMatch "(?i)(^|_)(key|secret|password|token|credentials)$" .name) -}}
{{- fail (printf "extraEnv %s: a secret must come from a Secret (valueFrom.secretKeyRef or extraEnvFromSecrets), not a literal value" .name) -}}
{{- end -}}
{{- end -}}
{{- $env := list -}}
{{- if and .Values.masterKeySecret.name (not (has "LITELLM_MASTER_KEY" $extraNames)) -}}
{{- $ref := dict "name" .Values.masterKeySecret.name "key" .Values.masterKeySecret.key -}}
{{- $env = append $env (dict "name" "LITELLM_MASTER_KEY" "valueFrom" (dict "secretKeyRef" $ref)) -}}
{{- end -}}
{{- with (concat $env (.Values.extraEnv | default list)) }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod affinity: `affinity` with the keepOffGpuNodes expression added to every required nodeSelectorTerm
(terms are ORed, expressions inside a term ANDed, so the GPU node is excluded whichever term matches).
*/}}
{{- define "litellm.affinity" -}}
{{- $affinity := deepCopy (.Values.affinity | default dict) -}}
{{- if .Values.keepOffGpuNodes.enabled -}}
{{- $expr := dict "key" .Values.keepOffGpuNodes.labelKey "operator" "NotIn" "values" .Values.keepOffGpuNodes.values -}}
{{- $nodeAffinity := get $affinity "nodeAffinity" | default dict -}}
{{- $required := get $nodeAffinity "requiredDuringSchedulingIgnoredDuringExecution" | default dict -}}
{{- $terms := get $required "nodeSelectorTerms" | default (list (dict)) -}}
{{- $newTerms := list -}}
{{- range $terms -}}
{{- $term := deepCopy . -}}
{{- $_ := set $term "matchExpressions" (append (get $term "matchExpressions" | default list) $expr) -}}
{{- $newTerms = append $newTerms $term -}}
{{- end -}}
{{- $_ := set $required "nodeSelectorTerms" $newTerms -}}
{{- $_ := set $nodeAffinity "requiredDuringSchedulingIgnoredDuringExecution" $required -}}
{{- $_ := set $affinity "nodeAffinity" $nodeAffinity -}}
{{- end -}}
{{- with $affinity }}{{ toYaml . }}{{ end }}
{{- end }}
