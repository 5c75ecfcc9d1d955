"""Model catalog of the twin: Ollama registry tags with manifests, behaviour profiles, vLLM models.

``load_models(path)`` reads ``lab/models.yaml``. Digests are stable fake sha256 values derived from the model
name (and family for shared layers such as the license), so every run and every machine sees the same
manifests, as with registry.ollama.ai.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from ansible_collections.homelab.inference.plugins.module_utils.model_names import normalize_name

GIB = 1024**3
MIB = 1024**2

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
TEMPLATE_MEDIA_TYPE = "application/vnd.ollama.image.template"
LICENSE_MEDIA_TYPE = "application/vnd.ollama.image.license"
PARAMS_MEDIA_TYPE = "application/vnd.ollama.image.params"

# Sizes (bytes) of the small layers every Ollama model carries besides the GGUF blob.
_SMALL_LAYERS = (
    (TEMPLATE_MEDIA_TYPE, "template", 1_482),
    (LICENSE_MEDIA_TYPE, "license", 11_343),
    (PARAMS_MEDIA_TYPE, "params", 148),
)


class CatalogError(ValueError):
    """``lab/models.yaml`` is malformed (missing key, bad range, unknown thinking mode)."""


def normalize_tag(name: str) -> str:
    """``phi4-mini`` -> ``phi4-mini:latest``; strips ``registry.ollama.ai/`` and ``library/`` prefixes (Ollama's
    defaults), then adds the tag as the product does (``model_names.normalize_name``, the one normaliser)."""
    name = name.strip()
    for prefix in ("registry.ollama.ai/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return normalize_name(name) if name else name


def fake_digest(*parts: str) -> str:
    """A stable ``sha256:<64 hex>`` digest from the given strings."""
    return "sha256:" + hashlib.sha256("\x00".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Layer:
    """One blob of a manifest: ``media_type``, ``digest`` (``sha256:...``), ``size`` (bytes)."""

    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def _pair(value: Any, key: str, model: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if not isinstance(value, list) or len(value) != 2 or value[0] > value[1]:
        raise CatalogError(f"{model}: {key} must be [min, max], got {value!r}")
    return float(value[0]), float(value[1])


def _share(value: Any, key: str, model: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise CatalogError(f"{model}: {key} must be within 0..1, got {value}")
    return value


def _thinking(value: Any, model: str) -> str:
    if value not in ("never", "optional", "always"):
        raise CatalogError(f"{model}: thinking must be never|optional|always, got {value!r}")
    return value


@dataclass(frozen=True)
class BehaviourProfile:
    """How a model answers (shared by the Ollama and vLLM emulators). Durations in real-lab seconds.

    Attributes:
        latency_s: classification latency range [min, max] (s) on a warm model.
        simple_latency_s: short chat latency range (s).
        tokens_per_s: generation speed range (tokens per real-lab second).
        json_valid_share: share of valid, complete JSON answers without a format constraint (0..1).
        format_complete_share: share of complete answers with a format constraint (always parseable) (0..1).
        doc_type_accuracy: share of answers with the right ``document_type`` (0..1).
        thinking: ``never`` | ``optional`` | ``always``.
        thinking_tokens: thinking tokens range for a classification.
    """

    latency_s: tuple[float, float]
    simple_latency_s: tuple[float, float]
    tokens_per_s: tuple[float, float]
    json_valid_share: float
    format_complete_share: float
    doc_type_accuracy: float
    thinking: str
    thinking_tokens: tuple[float, float]


@dataclass(frozen=True)
class OllamaModel:
    """An Ollama registry tag and its behaviour when it runs on the CPU worker.

    Attributes:
        name: normalized tag (``phi4-mini:latest``).
        size_bytes: size on disk = sum of layer sizes (bytes).
        memory_bytes: resident memory when loaded (bytes).
        cold_load_s: load time (real-lab seconds).
        layers: manifest layers (model blob first).
        config: the config blob descriptor; ``config_body`` its JSON bytes.
        manifest_body: the manifest JSON bytes as served; ``manifest_digest`` their sha256.
    """

    name: str
    size_bytes: int
    family: str
    parameter_size: str
    quantization: str
    memory_gib: float
    cold_load_s: float
    capabilities: tuple[str, ...]
    context_length: int
    behaviour: BehaviourProfile
    layers: tuple[Layer, ...] = field(default=())
    config: Layer | None = None
    config_body: bytes = b""
    manifest_body: bytes = b""
    manifest_digest: str = ""

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)

    @property
    def repository(self) -> str:
        """Registry path without tag, e.g. ``library/qwen2.5``."""
        repo = self.name.rsplit(":", 1)[0]
        return repo if "/" in repo else f"library/{repo}"

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1]

    @property
    def model_layer(self) -> Layer:
        return self.layers[0]

    @property
    def details(self) -> dict:
        """The ``details`` object of /api/tags, /api/show and /api/ps."""
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }

    def manifest(self) -> dict:
        return json.loads(self.manifest_body)


@dataclass(frozen=True)
class VllmModel:
    """A Hugging Face repo the emulated vLLM can serve. Memory in GiB / MiB, durations in real-lab seconds."""

    repo: str
    quantization: str | None
    weights_gib: float
    cuda_graph_gib: float
    kv_cache_mib_per_1k_tokens: float
    max_position_embeddings: int
    load_s: float
    behaviour: BehaviourProfile


@dataclass(frozen=True)
class ModelCatalog:
    """Everything in ``lab/models.yaml``.

    Attributes:
        ollama: normalized tag -> OllamaModel.
        vllm: repo id -> VllmModel.
        download_bytes_per_s: simulated registry download speed (bytes per real-lab second).
        manifest_latency_s: time to fetch a manifest (real-lab seconds).
    """

    ollama: dict[str, OllamaModel]
    vllm: dict[str, VllmModel]
    download_bytes_per_s: float
    manifest_latency_s: float

    def ollama_model(self, name: str) -> OllamaModel | None:
        """The registry tag for ``name`` (``phi4-mini`` finds ``phi4-mini:latest``) or None."""
        return self.ollama.get(normalize_tag(name))


def _behaviour(spec: dict, model: str, defaults: dict) -> BehaviourProfile:
    merged = {**defaults, **spec}
    try:
        return BehaviourProfile(
            latency_s=_pair(merged["latency_s"], "latency_s", model),
            simple_latency_s=_pair(merged["simple_latency_s"], "simple_latency_s", model),
            tokens_per_s=_pair(merged["tokens_per_s"], "tokens_per_s", model),
            json_valid_share=_share(merged["json_valid_share"], "json_valid_share", model),
            format_complete_share=_share(merged.get("format_complete_share", 1.0), "format_complete_share", model),
            doc_type_accuracy=_share(merged["doc_type_accuracy"], "doc_type_accuracy", model),
            thinking=_thinking(merged.get("thinking", "never"), model),
            thinking_tokens=_pair(merged.get("thinking_tokens", [0, 0]), "thinking_tokens", model),
        )
    except KeyError as exc:
        raise CatalogError(f"{model}: missing key {exc.args[0]}") from exc


def _build_ollama_model(name: str, spec: dict, defaults: dict) -> OllamaModel:
    merged = {**defaults, **spec}
    try:
        size = int(merged["size_bytes"])
        family = str(merged["family"])
        model = OllamaModel(
            name=name,
            size_bytes=size,
            family=family,
            parameter_size=str(merged["parameter_size"]),
            quantization=str(merged["quantization"]),
            memory_gib=float(merged["memory_gib"]),
            cold_load_s=float(merged["cold_load_s"]),
            capabilities=tuple(merged.get("capabilities") or ("completion",)),
            context_length=int(merged["context_length"]),
            behaviour=_behaviour(spec, name, defaults),
        )
    except KeyError as exc:
        raise CatalogError(f"{name}: missing key {exc.args[0]}") from exc
    small = [
        Layer(media_type, fake_digest("ollama-layer", family if kind == "license" else name, kind), layer_size)
        for media_type, kind, layer_size in _SMALL_LAYERS
    ]
    blob_size = size - sum(layer.size for layer in small)
    if blob_size <= 0:
        raise CatalogError(f"{name}: size_bytes {size} is too small")
    layers = (Layer(MODEL_MEDIA_TYPE, fake_digest("ollama-model-blob", name), blob_size), *small)
    config_body = json.dumps(
        {
            "model_format": "gguf",
            "model_family": family,
            "model_families": [family],
            "model_type": model.parameter_size,
            "file_type": model.quantization,
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        },
        separators=(",", ":"),
    ).encode()
    config = Layer(CONFIG_MEDIA_TYPE, "sha256:" + hashlib.sha256(config_body).hexdigest(), len(config_body))
    manifest_body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
        },
        separators=(",", ":"),
    ).encode()
    return replace(
        model,
        layers=layers,
        config=config,
        config_body=config_body,
        manifest_body=manifest_body,
        manifest_digest="sha256:" + hashlib.sha256(manifest_body).hexdigest(),
    )


def _build_vllm_model(repo: str, spec: dict) -> VllmModel:
    try:
        return VllmModel(
            repo=repo,
            quantization=spec.get("quantization"),
            weights_gib=float(spec["weights_gib"]),
            cuda_graph_gib=float(spec.get("cuda_graph_gib", 0.5)),
            kv_cache_mib_per_1k_tokens=float(spec["kv_cache_mib_per_1k_tokens"]),
            max_position_embeddings=int(spec["max_position_embeddings"]),
            load_s=float(spec["load_s"]),
            behaviour=_behaviour(spec, repo, {}),
        )
    except KeyError as exc:
        raise CatalogError(f"{repo}: missing key {exc.args[0]}") from exc


def load_models(path: str | Path) -> ModelCatalog:
    """Read ``lab/models.yaml`` into a :class:`ModelCatalog`.

    Args:
        path: the YAML file.

    Returns:
        ModelCatalog: Ollama tags keyed by normalized name, vLLM models keyed by repo id.

    Raises:
        OSError: the file cannot be read.
        CatalogError: a model entry is malformed.
    """
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    registry = data.get("registry") or {}
    ollama = data.get("ollama") or {}
    defaults = ollama.get("defaults") or {}
    models = {}
    for name, spec in (ollama.get("models") or {}).items():
        norm = normalize_tag(str(name))
        models[norm] = _build_ollama_model(norm, spec or {}, defaults)
    vllm = {
        str(repo): _build_vllm_model(str(repo), spec or {})
        for repo, spec in ((data.get("vllm") or {}).get("models") or {}).items()
    }
    return ModelCatalog(
        ollama=models,
        vllm=vllm,
        download_bytes_per_s=float(registry.get("download_bytes_per_s", 50_000_000)),
        manifest_latency_s=float(registry.get("manifest_latency_s", 0.4)),
    )


DEFAULT_MODELS_PATH = Path(__file__).resolve().parent.parent / "models.yaml"
