"""Manifests of the inference workloads that the twin's tests deploy by hand (the charts are tested elsewhere)."""

from __future__ import annotations

HAS_LITELLM_NOTE = "LiteLLM is not installed in .venv-litellm (make venv): the ml/litellm Pods run the real proxy"


def ollama(node: str | None = None, request: str = "1Gi", limit: str = "4Gi", name: str = "ollama") -> str:
    """Service and Deployment ``ml/<name>`` of Ollama (Recreate, readiness on ``/``)."""
    selector = f"\n      nodeSelector: {{kubernetes.io/hostname: {node}}}" if node else ""
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: ml}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 11434, targetPort: http}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: ml}}
spec:
  replicas: 1
  strategy: {{type: Recreate}}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:{selector}
      containers:
        - name: ollama
          image: ollama/ollama:0.13.3
          args: [serve]
          ports: [{{name: http, containerPort: 11434}}]
          env: [{{name: OLLAMA_KEEP_ALIVE, value: "-1"}}]
          readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: 10}}
          resources: {{requests: {{memory: {request}}}, limits: {{memory: {limit}}}}}
"""


def litellm(ollama_url: str, alias: str = "ollama-qwen", rolling: bool = False) -> str:
    """Secret, ConfigMap, Service and Deployment ``ml/litellm`` routing ``alias`` to phi4-mini on ``ollama_url``."""
    strategy = "\n  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}" if rolling else ""
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: litellm-secrets, namespace: ml}}
stringData: {{master-key: sk-test-master}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: litellm-config, namespace: ml}}
data:
  config.yaml: |
    model_list:
      - model_name: {alias}
        litellm_params: {{model: ollama_chat/phi4-mini, api_base: "{ollama_url}", timeout: 5}}
    general_settings: {{master_key: os.environ/LITELLM_MASTER_KEY}}
---
apiVersion: v1
kind: Service
metadata: {{name: litellm, namespace: ml}}
spec:
  selector: {{app: litellm}}
  ports: [{{name: http, port: 4000, targetPort: http}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: litellm, namespace: ml}}
spec:
  replicas: 1{strategy}
  selector: {{matchLabels: {{app: litellm}}}}
  template:
    metadata: {{labels: {{app: litellm}}}}
    spec:
      containers:
        - name: litellm
          image: ghcr.io/berriai/litellm:main-v1.106.2
          args: [--config, /app/config.yaml, --port, "4000"]
          ports: [{{name: http, containerPort: 4000}}]
          env:
            - name: LITELLM_MASTER_KEY
              valueFrom: {{secretKeyRef: {{name: litellm-secrets, key: master-key}}}}
          readinessProbe: {{httpGet: {{path: /health/readiness, port: http}}, periodSeconds: 5, failureThreshold: 2}}
          # a graceful rollover, as charts/litellm with the lab inventory: serve on for 2 s after the deletion (the
          # service proxy lags 1 s behind the endpoints), then SIGTERM
          lifecycle: {{preStop: {{sleep: {{seconds: 2}}}}}}
          volumeMounts: [{{name: config, mountPath: /app/config.yaml, subPath: config.yaml, readOnly: true}}]
      terminationGracePeriodSeconds: 15
      volumes: [{{name: config, configMap: {{name: litellm-config}}}}]
"""
