"""The Proxmox twin over HTTPS (trustme CA) on 127.0.0.1, in a background thread with its own event loop.

proxmoxer is synchronous and the module under test runs in-process, so the twin cannot share the test's loop.
"""

from __future__ import annotations

import asyncio
import ssl
import threading

import pytest
import trustme
from aiohttp import web

from lab.proxmox import ProxmoxHost, make_proxmox_app
from tests.proxmox.pve_twin import CONTAINERS, NODE, RESERVED_MIB, TIME_SCALE, TOKEN_ID, TOKEN_SECRET, TOTAL_MIB, Twin


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    path = tmp_path_factory.mktemp("pve-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ctx, path


@pytest.fixture
def twin(tls_ca, monkeypatch):
    """A fresh twin per test (containers as in lab/topology.yaml plus a stopped spare 110)."""
    server_ctx, ca_path = tls_ca
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PROXMOX_HOST", "PROXMOX_TOKEN_SECRET"):
        monkeypatch.delenv(var, raising=False)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict = {}
    events: list[tuple[int, str, int]] = []

    async def on_event(vmid: int, event: str, config: dict) -> None:
        events.append((vmid, event, int(config["memory"])))

    async def start():
        host = ProxmoxHost(
            node=NODE,
            total_memory_mib=TOTAL_MIB,
            reserved_memory_mib=RESERVED_MIB,
            containers=[dict(c) for c in CONTAINERS],
            time_scale=TIME_SCALE,
            on_event=on_event,
        )
        runner = web.AppRunner(make_proxmox_app(host, {TOKEN_ID: TOKEN_SECRET}), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
        await site.start()
        state.update(host=host, runner=runner, port=runner.addresses[0][1])

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="pve-twin", daemon=True)
    thread.start()
    assert started.wait(10), "twin did not start"
    yield Twin(host=state["host"], port=state["port"], ca_path=ca_path, loop=loop, events=events)
    asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()
