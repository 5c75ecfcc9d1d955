"""Client plumbing shared by the twin's components that talk to the real kube-apiserver.

Each component (a node's kubelet, the service proxy, the local-path provisioner) is an ordinary API client of its
own identity, built from a kubeconfig with the ``kubernetes`` Python client; :class:`Reflector` is their
list-and-watch loop (the informer pattern of client-go, reduced to what the twin needs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("lab.kubeclient")

Handler = Callable[[str, Any], None]


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def new_api_client(kubeconfig: Path):
    """An ``ApiClient`` of its own for one component (the global default configuration is never touched)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig))


def close_api_client(api) -> None:
    """Close ``api``'s thread pool and the connections of its pool manager."""
    if api is not None:
        with contextlib.suppress(Exception):
            api.close()


def api_status(exc: BaseException) -> int | None:
    """The HTTP status of a ``kubernetes`` client ``ApiException`` (None for any other error)."""
    from kubernetes.client.exceptions import ApiException

    return exc.status if isinstance(exc, ApiException) else None


class Reflector:
    """List, then watch, one resource in a daemon thread; the events are handled on the asyncio loop.

    ``list_func`` is a list method of the ``kubernetes`` client (``CoreV1Api.list_service_for_all_namespaces``,
    ...), ``kwargs`` its filters (``label_selector``...). ``handler(event, data)`` runs on ``loop``: ``("SYNC",
    items)`` with every object after each (re)list, then ``("ADDED" | "MODIFIED" | "DELETED", obj)``; objects are
    the API's JSON as plain dicts. A watch that ends (server timeout) resumes from the last resourceVersion (kept
    fresh by bookmarks); 410 Gone lists again at once; any other error (a non-2xx answer raises ``ApiException``;
    the API server went away mid-watch or refuses connections) lists again after a back-off (0.2 s doubling to
    ``backoff_max``, 2 s: the view is at most that stale once an API server that was down answers again). The
    first error of a run of them is logged as a warning, the others at debug level, the recovery again as a
    warning. :meth:`stop` interrupts a blocked read, so the thread ends promptly.
    """

    def __init__(
        self,
        name: str,
        list_func: Callable[..., Any],
        handler: Handler,
        loop: asyncio.AbstractEventLoop,
        *,
        watch_timeout: int = 120,
        backoff_max: float = 2.0,
        **kwargs: Any,
    ):
        self.name = name
        self.list_func = list_func
        self.handler = handler
        self.loop = loop
        self.watch_timeout = watch_timeout
        self.backoff_max = backoff_max
        self.kwargs = kwargs
        self.synced = False  # set on the loop after the first list was handled
        self.relists = 0
        self.errors = 0  # errors that made it list again (after a back-off)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._resp = None
        self._thread = threading.Thread(target=self._run, name=f"reflector-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end and interrupt the request it is blocked in (returns at once)."""
        with self._lock:
            self._stopping.set()
            resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()

    async def join(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, timeout)

    # -- thread ------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.2
        failing_since: float | None = None
        while not self._stopping.is_set():
            try:
                version = self._list()
                if failing_since is not None:
                    log.warning("%s: listed again after %.1f s of errors", self.name, time.monotonic() - failing_since)
                    failing_since = None
                backoff = 0.2
                while not self._stopping.is_set():
                    version = self._watch(version)
            except Exception as exc:
                if self._stopping.is_set():
                    break
                if isinstance(exc, WatchExpired) or api_status(exc) == 410:
                    log.info("%s: watch expired (410 Gone), listing again", self.name)
                    continue
                self.errors += 1
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning(
                        "%s: %s; listing again (back-off %.1f s doubling to %.1f s)",
                        self.name,
                        exc or type(exc).__name__,
                        backoff,
                        self.backoff_max,
                    )
                else:
                    log.debug("%s: %s; listing again in %.1f s", self.name, exc or type(exc).__name__, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max)

    def _request(self, **kwargs):
        """Start a request; None when stopping (then nothing is left open)."""
        resp = self.list_func(_preload_content=False, **self.kwargs, **kwargs)
        with self._lock:
            if self._stopping.is_set():
                resp.close()
                resp.release_conn()
                return None
            self._resp = resp
        return resp

    def _done(self, resp) -> None:
        with self._lock:
            self._resp = None
        with contextlib.suppress(Exception):
            resp.close()
            resp.release_conn()

    def _list(self) -> str:
        resp = self._request(_request_timeout=(10, 60))
        if resp is None:
            return ""
        try:
            data = json.loads(resp.data)
        finally:
            self._done(resp)
        self.relists += 1
        self._deliver("SYNC", list(data.get("items") or []))
        return data["metadata"]["resourceVersion"]

    def _watch(self, version: str) -> str:
        resp = self._request(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _request_timeout=(10, self.watch_timeout + 30),
        )
        if resp is None:
            return version
        try:
            buffer = b""
            for chunk in resp.stream(amt=None, decode_content=False):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        version = self._event(json.loads(line), version)
                if self._stopping.is_set():
                    break
        finally:
            self._done(resp)
        return version

    def _event(self, event: dict, version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpired
            raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
        version = (obj.get("metadata") or {}).get("resourceVersion") or version
        if kind != "BOOKMARK":
            self._deliver(kind, obj)
        return version

    def _deliver(self, kind: str, data: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self._handle, kind, data)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._stopping.set()

    # -- loop --------------------------------------------------------------------------------------------------

    def _handle(self, kind: str, data: Any) -> None:
        if self._stopping.is_set():
            return
        try:
            self.handler(kind, data)
        except Exception:
            log.exception("%s: handling %s failed", self.name, kind)
        if kind == "SYNC":
            self.synced = True
