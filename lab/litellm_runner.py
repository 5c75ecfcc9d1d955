"""Runs the real LiteLLM proxy (``litellm[proxy]`` in its own virtualenv) for the twin's ``ml/litellm`` Pod."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import aiohttp


class LiteLLMProcess:
    """One ``litellm --config ... --port ...`` subprocess.

    ``config_yaml`` is the ConfigMap's ``config.yaml`` verbatim, ``env`` the Pod's container environment
    (master key from the Secret included). Logs go to ``log_file``.
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
    ):
        self.binary = binary
        self.workdir = workdir
        self.host = host
        self.port = port
        self.config_yaml = config_yaml
        self.env = env
        self.log_file = log_file
        self.proc: asyncio.subprocess.Process | None = None

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
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "INFO",
            "NO_PROXY": f"127.0.0.1,localhost,{self.host}",
            **self.env,
        }
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            str(self.binary),
            "--config",
            str(config),
            "--host",
            self.host,
            "--port",
            str(self.port),
            cwd=str(self.workdir),
            env=env,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

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
                os.kill(self.proc.pid, signal.SIGTERM)

    async def wait(self) -> int | None:
        """Wait for the main process to exit; its return code (-N when killed by signal N)."""
        if self.proc is None:
            return None
        return await self.proc.wait()

    async def kill(self) -> None:
        """SIGKILL to the whole process group (a container's processes die with it), and wait for the exit."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        """Terminate the proxy (:meth:`terminate`); kill it and its children after ``timeout`` seconds."""
        if self.proc is None:
            return
        self.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), timeout)
        await self.kill()
