{{/*
An httpGet probe on the container port `http` from a probe value (timings). Call with
(dict "probe" .Values.readinessProbe "path" "/health"); the caller checks `enabled`.
*/}}
{{- define "common.httpProbe" -}}
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
The container's lifecycle: a `preStop` hook with the `sleep` action (Kubernetes 1.30+, no binary needed in the
image) of `preStopSleepSeconds`, nothing when it is 0. Refuses a delay that is not shorter than
`terminationGracePeriodSeconds`: the grace period counts from the Pod's deletion, the delay included.
*/}}
{{- define "common.lifecycle" -}}
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
