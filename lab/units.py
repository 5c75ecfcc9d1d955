"""Kubernetes resource quantities, parsed by the kubernetes client's ``parse_quantity``."""

from __future__ import annotations

from kubernetes.utils.quantity import parse_quantity as _parse_quantity


def parse_quantity(value: str | int | float) -> float:
    """Parse a Kubernetes quantity (``"16Gi"``, ``"500m"``) into a plain number (bytes for memory).

    Raises ``ValueError`` for anything that is not a quantity.
    """
    return float(_parse_quantity(value))


def mib_quantity(mib: int) -> str:
    """MiB as a Kubernetes memory quantity in Ki, the way a kubelet reports node memory."""
    return f"{int(mib) * 1024}Ki"
