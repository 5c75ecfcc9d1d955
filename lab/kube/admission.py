"""Defaulting and validation on create/update, as the API server's defaulters and admission plugins do.

Covers what the twin's clients can observe: the defaults that appear in ``kubectl get -o yaml`` (and so in
helm's three-way merges and in ReplicaSet templates), requests defaulted from limits, the DefaultStorageClass
and DefaultTolerationSeconds admission plugins, RuntimeClass admission, and the validation errors our charts
could hit (names, Deployment selectors, immutable fields).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from lab.kube.errors import ApiError
from lab.kube.selectors import SelectorError, labels_match_selector

if TYPE_CHECKING:
    from lab.kube.resources import ResourceType

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAMES = {"Namespace", "Service"}


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid with ``causes`` ``(field, reason, message)`` like the API server's field errors."""
    text = ", ".join(f"{field}: {message}" for field, _reason, message in causes)
    kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {text}',
        {
            "name": name,
            "group": rt.group,
            "kind": rt.kind,
            "causes": [{"reason": reason, "message": message, "field": field} for field, reason, message in causes],
        },
    )


def validate_name(rt: ResourceType, name: str) -> None:
    """Raise 422 Invalid when ``name`` is not a DNS-1123 subdomain (label for Namespaces/Services)."""
    if rt.kind in _LABEL_NAMES:
        ok = len(name) <= 63 and bool(_DNS_LABEL.match(name))
        rule = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"
    else:
        ok = len(name) <= 253 and bool(_DNS_SUBDOMAIN.match(name))
        rule = (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character"
        )
    if not ok:
        raise invalid(rt, name, [("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {rule}')])


# -- defaults --------------------------------------------------------------------------------------------------


def _default_container(container: dict) -> None:
    image = container.get("image", "")
    if "imagePullPolicy" not in container:
        tag = image.rsplit("/", 1)[-1]
        latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
        container["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    resources = container.setdefault("resources", {})
    limits = resources.get("limits") or {}
    if limits:
        requests = resources.setdefault("requests", {})
        for name, value in limits.items():
            requests.setdefault(name, value)
    for env in container.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("fieldRef")
        if ref is not None:
            ref.setdefault("apiVersion", "v1")
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if isinstance(probe, dict):
            probe.setdefault("timeoutSeconds", 1)
            probe.setdefault("periodSeconds", 10)
            probe.setdefault("successThreshold", 1)
            probe.setdefault("failureThreshold", 3)
            for handler in ("httpGet",):
                if isinstance(probe.get(handler), dict):
                    probe[handler].setdefault("scheme", "HTTP")
                    probe[handler].setdefault("path", "/")


def default_pod_spec(spec: dict) -> None:
    """Pod spec defaults (``restartPolicy``, ``dnsPolicy``, container pull policy...) in place."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for container in spec.get("containers") or []:
        _default_container(container)
    for container in spec.get("initContainers") or []:
        _default_container(container)
    for volume in spec.get("volumes") or []:
        for source in ("configMap", "secret"):
            if isinstance(volume.get(source), dict):
                volume[source].setdefault("defaultMode", 420)
        if set(volume) == {"name"}:
            volume["emptyDir"] = {}


def default_pod_template(template: dict) -> None:
    template.setdefault("metadata", {})
    default_pod_spec(template.setdefault("spec", {}))


def _percent_default(strategy: dict) -> None:
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")


def apply_defaults(rt: ResourceType, obj: dict) -> None:
    """Fill the defaults the API server adds for ``rt`` into ``obj`` (in place)."""
    kind = rt.kind
    spec = obj.get("spec")
    if kind == "Deployment":
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        _percent_default(spec.setdefault("strategy", {}))
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        default_pod_template(spec.setdefault("template", {}))
    elif kind == "ReplicaSet":
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        default_pod_template(spec.setdefault("template", {}))
    elif kind == "Pod":
        default_pod_spec(obj.setdefault("spec", {}))
        spec = obj["spec"]
        spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("priority", 0)
        tolerations = spec.setdefault("tolerations", [])
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(t.get("key") == key and t.get("effect") in (None, "", "NoExecute") for t in tolerations):
                tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    elif kind == "Service":
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        if spec["type"] in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    elif kind == "PersistentVolumeClaim":
        spec = obj.setdefault("spec", {})
        spec.setdefault("volumeMode", "Filesystem")
    elif kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif kind == "Namespace":
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        labels = obj["metadata"].setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif kind == "StorageClass":
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")


def quantity_of(value: Any) -> float:
    """A resource quantity as a number (``"16Gi"`` -> bytes, ``"500m"`` -> 0.5). Raises ``ValueError``."""
    from lab.units import parse_quantity

    return parse_quantity(value)


def validate(rt: ResourceType, obj: dict, old: dict | None = None) -> None:
    """Validation the API server applies; raises 422 :class:`ApiError` (``Invalid``)."""
    name = obj["metadata"].get("name", "")
    spec = obj.get("spec") or {}
    causes: list[tuple[str, str, str]] = []
    if rt.kind in ("Deployment", "ReplicaSet"):
        selector = spec.get("selector")
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
            causes.append(("spec.selector", "FieldValueRequired", "Required value"))
        else:
            try:
                ok = labels_match_selector(labels, selector)
            except SelectorError as exc:
                causes.append(("spec.selector", "FieldValueInvalid", f"Invalid value: {exc}"))
                ok = True
            if not ok:
                causes.append(
                    (
                        "spec.template.metadata.labels",
                        "FieldValueInvalid",
                        f"Invalid value: {labels!r}: `selector` does not match template `labels`",
                    )
                )
        if old is not None and rt.group == "apps" and (old.get("spec") or {}).get("selector") != selector:
            causes.append(("spec.selector", "FieldValueInvalid", "Invalid value: field is immutable"))
        if not ((spec.get("template") or {}).get("spec") or {}).get("containers"):
            causes.append(("spec.template.spec.containers", "FieldValueRequired", "Required value"))
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or replicas < 0:
            causes.append(("spec.replicas", "FieldValueInvalid", f"Invalid value: {replicas}: must be >= 0"))
    elif rt.kind == "Pod":
        if not spec.get("containers"):
            causes.append(("spec.containers", "FieldValueRequired", "Required value"))
        for index, container in enumerate(spec.get("containers") or []):
            if not container.get("name"):
                causes.append((f"spec.containers[{index}].name", "FieldValueRequired", "Required value"))
            if not container.get("image"):
                causes.append((f"spec.containers[{index}].image", "FieldValueRequired", "Required value"))
    elif rt.kind == "Service":
        if (
            spec.get("type", "ClusterIP") != "ExternalName"
            and not spec.get("ports")
            and spec.get("clusterIP") != "None"
        ):
            causes.append(("spec.ports", "FieldValueRequired", "Required value"))
        if old is not None:
            old_ip = (old.get("spec") or {}).get("clusterIP")
            if spec.get("clusterIP") not in (None, "", old_ip):
                causes.append(("spec.clusterIP", "FieldValueInvalid", "Invalid value: field is immutable"))
    elif rt.kind == "PersistentVolumeClaim":
        if not (((spec.get("resources") or {}).get("requests") or {}).get("storage")):
            causes.append(("spec.resources[storage]", "FieldValueRequired", "Required value"))
        if not spec.get("accessModes"):
            causes.append(
                ("spec.accessModes", "FieldValueRequired", "Required value: at least 1 access mode is required")
            )
    for section in ("labels", "annotations"):
        values = obj["metadata"].get(section) or {}
        for key, value in values.items():
            if not isinstance(value, str):
                causes.append((f"metadata.{section}", "FieldValueInvalid", f"Invalid value: {key}: must be a string"))
    if causes:
        raise invalid(rt, name, causes)
