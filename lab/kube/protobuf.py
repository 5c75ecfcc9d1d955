"""The Kubernetes protobuf wire format for the kinds client-go's typed clients send (helm's release Secrets).

A protobuf body is the 4-byte magic ``k8s\\x00`` followed by a ``runtime.Unknown`` envelope whose ``raw`` field
holds the object message (``k8s.io.api.core.v1.Secret``...). The message descriptors are built here with
``google.protobuf.descriptor_pb2`` from the field numbers of the upstream ``generated.proto`` files
(k8s.io/api/core/v1, k8s.io/apimachinery/pkg/apis/meta/v1, k8s.io/apimachinery/pkg/runtime); the
``protobuf`` runtime does the encoding. Only the fields the twin's clients use are declared: unknown fields are
skipped by the decoder.

helm 3.17 sends ``Content-Type: application/vnd.kubernetes.protobuf`` for Secret create/update and
``Accept: application/vnd.kubernetes.protobuf,application/json``; the server answers JSON unless the client
accepts protobuf only.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

_F = descriptor_pb2.FieldDescriptorProto
_STR, _BYTES, _INT64, _INT32, _BOOL, _MSG = (
    _F.TYPE_STRING,
    _F.TYPE_BYTES,
    _F.TYPE_INT64,
    _F.TYPE_INT32,
    _F.TYPE_BOOL,
    _F.TYPE_MESSAGE,
)
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf envelope of a supported kind."""


def _message(file: descriptor_pb2.FileDescriptorProto, name: str, fields: list[tuple]) -> None:
    msg = file.message_type.add(name=name)
    for field in fields:
        fname, number, ftype, label, *rest = field
        f = msg.field.add(name=fname, number=number, type=ftype, label=label, json_name=fname)
        if rest:
            f.type_name = rest[0]
        if rest and rest[0].endswith("Entry"):
            entry = rest[0].rsplit(".", 1)[-1]
            nested = msg.nested_type.add(name=entry)
            nested.options.map_entry = True
            nested.field.add(name="key", number=1, type=_STR, label=_OPT, json_name="key")
            value_type = rest[1] if len(rest) > 1 else _STR
            nested.field.add(name="value", number=2, type=value_type, label=_OPT, json_name="value")


@functools.cache
def _classes() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(name="lab_kube_generated.proto", package="k8s", syntax="proto2")
    _message(file, "TypeMeta", [("apiVersion", 1, _STR, _OPT), ("kind", 2, _STR, _OPT)])
    _message(
        file,
        "Unknown",
        [
            ("typeMeta", 1, _MSG, _OPT, ".k8s.TypeMeta"),
            ("raw", 2, _BYTES, _OPT),
            ("contentEncoding", 3, _STR, _OPT),
            ("contentType", 4, _STR, _OPT),
        ],
    )
    _message(file, "Time", [("seconds", 1, _INT64, _OPT), ("nanos", 2, _INT32, _OPT)])
    _message(
        file,
        "OwnerReference",
        [
            ("kind", 1, _STR, _OPT),
            ("name", 3, _STR, _OPT),
            ("uid", 4, _STR, _OPT),
            ("apiVersion", 5, _STR, _OPT),
            ("controller", 6, _BOOL, _OPT),
            ("blockOwnerDeletion", 7, _BOOL, _OPT),
        ],
    )
    _message(
        file,
        "ObjectMeta",
        [
            ("name", 1, _STR, _OPT),
            ("generateName", 2, _STR, _OPT),
            ("namespace", 3, _STR, _OPT),
            ("selfLink", 4, _STR, _OPT),
            ("uid", 5, _STR, _OPT),
            ("resourceVersion", 6, _STR, _OPT),
            ("generation", 7, _INT64, _OPT),
            ("creationTimestamp", 8, _MSG, _OPT, ".k8s.Time"),
            ("deletionTimestamp", 9, _MSG, _OPT, ".k8s.Time"),
            ("deletionGracePeriodSeconds", 10, _INT64, _OPT),
            ("labels", 11, _MSG, _REP, ".k8s.ObjectMeta.LabelsEntry"),
            ("annotations", 12, _MSG, _REP, ".k8s.ObjectMeta.AnnotationsEntry"),
            ("ownerReferences", 13, _MSG, _REP, ".k8s.OwnerReference"),
            ("finalizers", 14, _STR, _REP),
        ],
    )
    _message(
        file,
        "ListMeta",
        [
            ("selfLink", 1, _STR, _OPT),
            ("resourceVersion", 2, _STR, _OPT),
            ("continue", 3, _STR, _OPT),
            ("remainingItemCount", 4, _INT64, _OPT),
        ],
    )
    _message(
        file,
        "Secret",
        [
            ("metadata", 1, _MSG, _OPT, ".k8s.ObjectMeta"),
            ("data", 2, _MSG, _REP, ".k8s.Secret.DataEntry", _BYTES),
            ("type", 3, _STR, _OPT),
            ("stringData", 4, _MSG, _REP, ".k8s.Secret.StringDataEntry"),
            ("immutable", 5, _BOOL, _OPT),
        ],
    )
    _message(
        file,
        "ConfigMap",
        [
            ("metadata", 1, _MSG, _OPT, ".k8s.ObjectMeta"),
            ("data", 2, _MSG, _REP, ".k8s.ConfigMap.DataEntry"),
            ("binaryData", 3, _MSG, _REP, ".k8s.ConfigMap.BinaryDataEntry", _BYTES),
            ("immutable", 4, _BOOL, _OPT),
        ],
    )
    _message(
        file, "SecretList", [("metadata", 1, _MSG, _OPT, ".k8s.ListMeta"), ("items", 2, _MSG, _REP, ".k8s.Secret")]
    )
    _message(
        file,
        "ConfigMapList",
        [("metadata", 1, _MSG, _OPT, ".k8s.ListMeta"), ("items", 2, _MSG, _REP, ".k8s.ConfigMap")],
    )
    _message(file, "Preconditions", [("uid", 1, _STR, _OPT), ("resourceVersion", 2, _STR, _OPT)])
    _message(
        file,
        "DeleteOptions",
        [
            ("gracePeriodSeconds", 1, _INT64, _OPT),
            ("preconditions", 2, _MSG, _OPT, ".k8s.Preconditions"),
            ("orphanDependents", 3, _BOOL, _OPT),
            ("propagationPolicy", 4, _STR, _OPT),
            ("dryRun", 5, _STR, _REP),
        ],
    )
    _message(file, "NamespaceSpec", [("finalizers", 1, _STR, _REP)])
    _message(file, "NamespaceStatus", [("phase", 1, _STR, _OPT)])
    _message(
        file,
        "Namespace",
        [
            ("metadata", 1, _MSG, _OPT, ".k8s.ObjectMeta"),
            ("spec", 2, _MSG, _OPT, ".k8s.NamespaceSpec"),
            ("status", 3, _MSG, _OPT, ".k8s.NamespaceStatus"),
        ],
    )
    _message(
        file,
        "Eviction",
        [("metadata", 1, _MSG, _OPT, ".k8s.ObjectMeta"), ("deleteOptions", 2, _MSG, _OPT, ".k8s.DeleteOptions")],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    names = [m.name for m in file.message_type]
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"k8s.{n}")) for n in names}


SUPPORTED_KINDS = ("Secret", "ConfigMap", "SecretList", "ConfigMapList", "DeleteOptions", "Namespace", "Eviction")


# -- message -> JSON dict --------------------------------------------------------------------------------------


def _time_to_json(msg: Any) -> str:
    stamp = dt.datetime.fromtimestamp(msg.seconds, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta_to_json(msg: Any) -> dict:
    out: dict[str, Any] = {}
    for name in ("name", "generateName", "namespace", "uid", "resourceVersion"):
        if msg.HasField(name):
            out[name] = getattr(msg, name)
    if msg.HasField("generation"):
        out["generation"] = msg.generation
    for name in ("creationTimestamp", "deletionTimestamp"):
        if msg.HasField(name):
            out[name] = _time_to_json(getattr(msg, name))
    if msg.HasField("deletionGracePeriodSeconds"):
        out["deletionGracePeriodSeconds"] = msg.deletionGracePeriodSeconds
    if msg.labels:
        out["labels"] = dict(msg.labels)
    if msg.annotations:
        out["annotations"] = dict(msg.annotations)
    if msg.ownerReferences:
        refs = []
        for ref in msg.ownerReferences:
            item = {"apiVersion": ref.apiVersion, "kind": ref.kind, "name": ref.name, "uid": ref.uid}
            if ref.HasField("controller"):
                item["controller"] = ref.controller
            if ref.HasField("blockOwnerDeletion"):
                item["blockOwnerDeletion"] = ref.blockOwnerDeletion
            refs.append(item)
        out["ownerReferences"] = refs
    if msg.finalizers:
        out["finalizers"] = list(msg.finalizers)
    return out


def _delete_options_to_json(msg: Any) -> dict:
    out: dict[str, Any] = {}
    if msg.HasField("gracePeriodSeconds"):
        out["gracePeriodSeconds"] = msg.gracePeriodSeconds
    if msg.HasField("preconditions"):
        pre = {}
        if msg.preconditions.HasField("uid"):
            pre["uid"] = msg.preconditions.uid
        if msg.preconditions.HasField("resourceVersion"):
            pre["resourceVersion"] = msg.preconditions.resourceVersion
        out["preconditions"] = pre
    if msg.HasField("orphanDependents"):
        out["orphanDependents"] = msg.orphanDependents
    if msg.HasField("propagationPolicy"):
        out["propagationPolicy"] = msg.propagationPolicy
    if msg.dryRun:
        out["dryRun"] = list(msg.dryRun)
    return out


def _object_to_json(kind: str, msg: Any, api_version: str) -> dict:
    out: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
    if kind == "DeleteOptions":
        out.update(_delete_options_to_json(msg))
        return out
    out["metadata"] = _meta_to_json(msg.metadata)
    if kind == "Eviction":
        if msg.HasField("deleteOptions"):
            out["deleteOptions"] = _delete_options_to_json(msg.deleteOptions)
        return out
    if kind == "Namespace":
        if msg.HasField("spec"):
            out["spec"] = {"finalizers": list(msg.spec.finalizers)} if msg.spec.finalizers else {}
        return out
    if kind == "Secret":
        if msg.data:
            out["data"] = {k: base64.b64encode(v).decode() for k, v in msg.data.items()}
        if msg.stringData:
            out["stringData"] = dict(msg.stringData)
        if msg.HasField("type"):
            out["type"] = msg.type
    elif kind == "ConfigMap":
        if msg.data:
            out["data"] = dict(msg.data)
        if msg.binaryData:
            out["binaryData"] = {k: base64.b64encode(v).decode() for k, v in msg.binaryData.items()}
    if msg.HasField("immutable"):
        out["immutable"] = msg.immutable
    return out


def decode(body: bytes) -> dict:
    """Decode a protobuf request body into the JSON form of the object.

    Raises :class:`ProtobufError` for a missing magic prefix or a kind outside :data:`SUPPORTED_KINDS`.
    """
    if not body.startswith(MAGIC):
        raise ProtobufError("protobuf body does not start with the k8s\\x00 magic")
    classes = _classes()
    envelope = classes["Unknown"]()
    try:
        envelope.ParseFromString(body[len(MAGIC) :])
    except Exception as exc:  # google.protobuf.message.DecodeError and friends
        raise ProtobufError(f"invalid protobuf envelope: {exc}") from exc
    kind = envelope.typeMeta.kind
    api_version = envelope.typeMeta.apiVersion or "v1"
    if kind not in SUPPORTED_KINDS or kind.endswith("List"):
        raise ProtobufError(f"protobuf bodies of kind {kind!r} are not supported by this server")
    msg = classes[kind]()
    try:
        msg.ParseFromString(envelope.raw)
    except Exception as exc:
        raise ProtobufError(f"invalid {kind} message: {exc}") from exc
    return _object_to_json(kind, msg, api_version)


# -- JSON dict -> message --------------------------------------------------------------------------------------


def _parse_time(value: str) -> int:
    return int(dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp())


def _meta_from_json(meta: dict, msg: Any) -> None:
    for name in ("name", "generateName", "namespace", "uid", "resourceVersion"):
        if meta.get(name):
            setattr(msg, name, meta[name])
    if meta.get("generation"):
        msg.generation = int(meta["generation"])
    for name in ("creationTimestamp", "deletionTimestamp"):
        if meta.get(name):
            getattr(msg, name).seconds = _parse_time(meta[name])
    if meta.get("deletionGracePeriodSeconds") is not None:
        msg.deletionGracePeriodSeconds = int(meta["deletionGracePeriodSeconds"])
    msg.labels.update(meta.get("labels") or {})
    msg.annotations.update(meta.get("annotations") or {})
    for ref in meta.get("ownerReferences") or []:
        item = msg.ownerReferences.add(kind=ref["kind"], name=ref["name"], uid=ref["uid"], apiVersion=ref["apiVersion"])
        if "controller" in ref:
            item.controller = bool(ref["controller"])
        if "blockOwnerDeletion" in ref:
            item.blockOwnerDeletion = bool(ref["blockOwnerDeletion"])
    msg.finalizers.extend(meta.get("finalizers") or [])


def _fill(kind: str, obj: dict, msg: Any) -> None:
    _meta_from_json(obj.get("metadata") or {}, msg.metadata)
    if kind == "Secret":
        for key, value in (obj.get("data") or {}).items():
            msg.data[key] = base64.b64decode(value)
        if obj.get("type"):
            msg.type = obj["type"]
    else:
        msg.data.update(obj.get("data") or {})
        for key, value in (obj.get("binaryData") or {}).items():
            msg.binaryData[key] = base64.b64decode(value)
    if obj.get("immutable") is not None:
        msg.immutable = bool(obj["immutable"])


def encode(obj: dict) -> bytes:
    """Encode a Secret/ConfigMap (or their List) into the protobuf envelope. Raises :class:`ProtobufError`."""
    kind = obj.get("kind", "")
    if kind not in ("Secret", "ConfigMap", "SecretList", "ConfigMapList"):
        raise ProtobufError(f"cannot encode {kind!r} as protobuf")
    classes = _classes()
    msg = classes[kind]()
    if kind.endswith("List"):
        meta = obj.get("metadata") or {}
        if meta.get("resourceVersion"):
            msg.metadata.resourceVersion = meta["resourceVersion"]
        if meta.get("continue"):
            setattr(msg.metadata, "continue", meta["continue"])
        for item in obj.get("items") or []:
            _fill(kind[: -len("List")], item, msg.items.add())
    else:
        _fill(kind, obj, msg)
    envelope = classes["Unknown"]()
    envelope.typeMeta.apiVersion = obj.get("apiVersion", "v1")
    envelope.typeMeta.kind = kind
    envelope.raw = msg.SerializeToString()
    return MAGIC + envelope.SerializeToString()
