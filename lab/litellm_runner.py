"""Runs the real LiteLLM proxy (``litellm[proxy]`` in its own virtualenv) for the twin's ``ml/litellm`` Pod."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
from pathlib import Path

import aiohttp

logger = logging.getLogger(__name__)

ZYGOTE_SCRIPT = Path(__file__).with_name("litellm_zygote.py")

# what every LiteLLM process of the twin gets besides the Pod's own environment
BASE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "INFO",
}
# Pod environment LiteLLM reads only after its import (the proxy's config resolves ``os.environ/...`` at start-up):
# the zygote may start a Pod that sets these; any other ``LITELLM_*`` variable may change what the import does
READ_AFTER_IMPORT = frozenset({"LITELLM_MASTER_KEY"})


def interpreter(binary: Path) -> Path | None:
    """The Python interpreter a console script runs with: its ``#!`` line or, for a script pip wrote with a
    ``/bin/sh`` launcher (an interpreter path too long for ``#!``), the path on its ``exec`` line. None when it
    names none."""
    try:
        with binary.open("rb") as script:
            first, second = script.readline(512), script.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    command = first[2:].decode(errors="replace").split()
    if command and command[0] == "/bin/sh" and second.startswith(b"'''exec' "):
        command = second.decode(errors="replace").split()[1:]
    return Path(command[0].strip("'\"")) if command else None


class LiteLLMZygote:
    """The client of ``lab/litellm_zygote.py``: one process that imported LiteLLM, forking a proxy per Pod.

    ``start()`` returns False when the zygote cannot import LiteLLM (its log says why); callers then exec.
    """

    def __init__(self, python: Path, log_file: Path, base_env: dict[str, str]):
        self.python = python
        self.log_file = log_file
        self.base_env = base_env
        self.proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._spawns: dict[int, asyncio.Future] = {}
        self._exits: dict[int, asyncio.Future] = {}
        self._ready: asyncio.Future | None = None
        self._reader: asyncio.Task | None = None

    async def start(self, timeout: float = 180.0) -> bool:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        home = self.log_file.parent
        home.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                str(self.python),
                str(ZYGOTE_SCRIPT),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **self.base_env},
                cwd=str(home),
            )
        self._reader = asyncio.create_task(self._read())
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            ready = False
        if not ready:
            await self.close()
        return ready

    @property
    def alive(self) -> bool:
        return (
            self.proc is not None
            and self.proc.returncode is None
            and self._ready is not None
            and (self._ready.done() and self._ready.result())
        )

    def _message(self, message: dict) -> None:
        loop = asyncio.get_running_loop()
        if "ready" in message:
            self._ready.set_result(True)
        elif "id" in message:
            self._exits.setdefault(message["pid"], loop.create_future())
            future = self._spawns.pop(message["id"], None)
            if future is not None and not future.done():
                future.set_result(message["pid"])
        elif "exit" in message:
            future = self._exits.setdefault(message["exit"], loop.create_future())
            if not future.done():
                future.set_result(message["code"])

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            async for line in self.proc.stdout:
                self._message(json.loads(line))
        finally:
            if not self._ready.done():
                self._ready.set_result(False)
            for future in self._spawns.values():
                if not future.done():
                    future.set_exception(RuntimeError("the LiteLLM zygote exited"))
            # children that outlive the zygote are reaped by init: their exit code is lost, their end is not
            for pid, future in self._exits.items():
                if not future.done():
                    asyncio.get_running_loop().create_task(self._poll_exit(pid, future))

    @staticmethod
    async def _poll_exit(pid: int, future: asyncio.Future) -> None:
        while Path(f"/proc/{pid}").exists():
            await asyncio.sleep(0.5)
        if not future.done():
            future.set_result(None)

    async def spawn(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[int, asyncio.Future]:
        """Fork a LiteLLM proxy with ``argv`` (``argv[0]`` the console script), ``env`` (the whole environment) and
        ``cwd``, its output appended to ``log``; returns its pid and a future of its return code."""
        if not self.alive or self.proc.stdin is None:
            raise RuntimeError("the LiteLLM zygote is not running")
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._spawns[request_id] = future
        request = {"id": request_id, "argv": argv, "env": env, "cwd": str(cwd), "log": str(log)}
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self.proc.stdin.drain()
        pid = await future
        return pid, self._exits[pid]

    async def close(self) -> None:
        """End the zygote (EOF on its stdin; killed after 5 s). The proxies it forked are stopped by their Pods."""
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


class LiteLLMProcess:
    """One ``litellm --config ... --port ...`` process, in a session of its own.

    ``config_yaml`` is the ConfigMap's ``config.yaml`` verbatim, ``env`` the Pod's container environment
    (master key from the Secret included). Logs go to ``log_file``. With ``zygote`` the process is forked from the
    zygote that imported LiteLLM already (see ``lab/litellm_zygote.py``) unless ``env`` sets a ``LITELLM_*``
    variable LiteLLM may read during its import; otherwise, and when the zygote is gone, the binary is exec'd.
    """

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        port: int,
        config_yaml: str,
        env: dict[str, str],
        log_file: Path,
        host: str = "127.0.0.1",
        zygote: LiteLLMZygote | None = None,
    ):
        self.binary = binary
        self.workdir = workdir
        self.host = host
        self.port = port
        self.config_yaml = config_yaml
        self.env = env
        self.log_file = log_file
        self.proc: asyncio.subprocess.Process | None = None
        self.zygote = zygote
        self.pid: int | None = None
        self._exit: asyncio.Future | None = None

    def _forkable(self) -> bool:
        if self.zygote is None or not self.zygote.alive:
            return False
        return not any(
            name.startswith("LITELLM_") and name not in READ_AFTER_IMPORT and value != BASE_ENV.get(name)
            for name, value in self.env.items()
        )

    async def start(self) -> None:
        """Start the proxy. Raises ``FileNotFoundError`` when the LiteLLM virtualenv is missing."""
        if not self.binary.exists():
            raise FileNotFoundError(f"LiteLLM is not installed at {self.binary}: run `make venv`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yaml"
        config.write_text(self.config_yaml)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            **BASE_ENV,
            "NO_PROXY": f"127.0.0.1,localhost,{self.host}",
            **self.env,
        }
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        argv = [str(self.binary), "--config", str(config), "--host", self.host, "--port", str(self.port)]
        if self._forkable():
            with contextlib.suppress(RuntimeError, ConnectionError):
                self.pid, self._exit = await self.zygote.spawn(argv, env, self.workdir, self.log_file)
                return
            logger.warning("the LiteLLM zygote is gone: starting %s with exec", self.binary)
        log = self.log_file.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(self.workdir),
            env=env,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.pid = self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status as ``subprocess`` gives it (-N: killed by signal N); None while it runs."""
        if self.proc is not None:
            return self.proc.returncode
        if self._exit is not None and self._exit.done():
            return self._exit.result()
        return None

    @property
    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.returncode is None
        return self._exit is not None and not self._exit.done()

    async def wait_ready(self, timeout: float = 90.0) -> bool:
        """Poll ``/health/readiness`` until it answers 200 (True) or the process exits / times out (False)."""
        url = f"http://{self.host}:{self.port}/health/readiness"
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as session:
            while asyncio.get_running_loop().time() < deadline:
                if not self.running:
                    return False
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return True
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.5)
        return False

    def terminate(self) -> None:
        """SIGTERM to the proxy's main process, as the container runtime signals a container's PID 1: uvicorn stops
        accepting connections, finishes the requests in flight and exits (see :meth:`wait`)."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    async def wait(self) -> int | None:
        """Wait for the main process to exit; its return code (-N when killed by signal N)."""
        if self.proc is not None:
            return await self.proc.wait()
        if self._exit is not None:
            return await asyncio.shield(self._exit)
        return None

    async def kill(self) -> None:
        """SIGKILL to the whole process group (a container's processes die with it), and wait for the exit."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        await self.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        """Terminate the proxy (:meth:`terminate`); kill it and its children after ``timeout`` seconds."""
        if self.pid is None:
            return
        self.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.wait()), timeout)
        await self.kill()
