{{/*
The chart's ServiceAccount when `serviceAccount.create` is true (nothing otherwise): `common.serviceAccountName`,
`serviceAccount.annotations`, and `automountServiceAccountToken` from `serviceAccount.automount`.
A chart's templates/serviceaccount.yaml is: {{ include "common.serviceAccount" . }}
*/}}
{{- define "common.serviceAccount" -}}
{{- if .Values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "common.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "common.labels" . | nindent 4 }}
  {{- with .Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: {{ .Values.serviceAccount.automount }}
{{- end }}
{{- end }}
