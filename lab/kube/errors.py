"""API errors rendered as ``metav1.Status`` the way the API server does."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered with a ``Status`` object: ``code`` (HTTP status), ``reason``, ``message``, ``details``."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        """The ``Status`` body (``kind: Status``, ``status: Failure``)."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(name: str, group: str, plural: str) -> dict:
    """``StatusDetails``; ``group`` is omitted for the core group (``omitempty``)."""
    details = {"name": name, "group": group, "kind": plural}
    if not group:
        details.pop("group")
    return details


def not_found(qualified: str, name: str, group: str, plural: str) -> ApiError:
    """404 NotFound: ``deployments.apps "x" not found``."""
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found', _details(name, group, plural))


def already_exists(qualified: str, name: str, group: str, plural: str) -> ApiError:
    """409 AlreadyExists: ``configmaps "x" already exists``."""
    return ApiError(409, "AlreadyExists", f'{qualified} "{name}" already exists', _details(name, group, plural))


def conflict(qualified: str, name: str, group: str, plural: str, why: str | None = None) -> ApiError:
    """409 Conflict for a stale ``resourceVersion`` (optimistic concurrency)."""
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified} "{name}": {why}',
        _details(name, group, plural),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(message: str, details: dict | None = None) -> ApiError:
    return ApiError(403, "Forbidden", message, details)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)
