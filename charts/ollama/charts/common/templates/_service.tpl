{{/*
The chart's Service: `common.serviceName`, type `service.type`, one TCP port `service.port` named http to the
container port `http`, selecting the Pods by `common.selectorLabels`; `service.annotations` when set.
A chart's templates/service.yaml is: {{ include "common.service" . }}
*/}}
{{- define "common.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "common.serviceName" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "common.labels" . | nindent 4 }}
  {{- with .Values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .Values.service.type }}
  ports:
    - name: http
      port: {{ .Values.service.port }}
      targetPort: http
      protocol: TCP
  selector:
    {{- include "common.selectorLabels" . | nindent 4 }}
{{- end }}
