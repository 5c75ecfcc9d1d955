"""The twin's LiteLLM zygote: imports the real LiteLLM proxy once, then forks one proxy process per Pod.

Run by the LiteLLM virtualenv's interpreter (``python lab/litellm_zygote.py``; the standard library and LiteLLM
only, nothing of the twin). Importing ``litellm.proxy.proxy_server`` costs about 9 s of CPU on this project's
machine and every LiteLLM Pod start paid it again: a twin upgrade rolls LiteLLM two to four times, the test suite
a few hundred times on two cores. A forked child runs the same entry point as the ``litellm`` console script
(``litellm.run_server``: click's command, then uvicorn) with the Pod's argv, environment and working directory, in
a session of its own (as ``start_new_session`` gives the exec'd process), its output appended to the container's
log; only the imports happened before the fork, as gunicorn's ``--preload`` does. The import sees the environment
of :data:`lab.litellm_runner.BASE_ENV` only; a Pod whose environment sets something else LiteLLM reads while it is
imported is started with exec instead (:meth:`lab.litellm_runner.LiteLLMProcess.start`).

Control protocol: JSON lines. stdin takes ``{"id", "argv", "env", "cwd", "log"}``; stdout answers ``{"ready":
true}`` once LiteLLM is imported, ``{"id", "pid"}`` per fork and ``{"exit": pid, "code": n}`` when a child ends
(``n`` as ``subprocess`` gives it: -N when killed by signal N). The zygote exits at EOF on stdin; its children go on
in their own sessions.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import sys
import traceback


def _child(request: dict, run_server) -> None:
    """In the forked child: become the Pod's process and run LiteLLM's entry point; never returns."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the zygote's pipes and selector are not the Pod's
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        try:
            code = run_server()
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
    except BaseException:  # the child must end in os._exit, never return into the zygote's loop
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: S110 - a closed stream: nothing left to write
                pass
        os._exit(code if isinstance(code, int) else 1)


class Zygote:
    """The zygote's loop: requests on stdin, children's exits through SIGCHLD (a wake-up pipe), answers on stdout."""

    def __init__(self, run_server, control: int):
        """``control``: the file descriptor of the control channel (the zygote's original stdout); fd 1 is already
        the log, so what LiteLLM prints never reaches the channel."""
        self.run_server = run_server
        self.control = os.fdopen(control, "w", buffering=1)
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.pending = b""

    def say(self, message: dict) -> None:
        self.control.write(json.dumps(message) + "\n")

    def reap(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 4096):
                pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.say({"exit": pid, "code": os.waitstatus_to_exitcode(status)})

    def requests(self) -> bool:
        """Fork a child per complete request line on stdin; False at EOF."""
        data = os.read(0, 65536)
        if not data:
            return False
        self.pending += data
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            request = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request, self.run_server)
            self.say({"id": request["id"], "pid": pid})
        return True

    def serve(self) -> int:
        selector = selectors.DefaultSelector()
        selector.register(0, selectors.EVENT_READ)
        selector.register(self.wake_r, selectors.EVENT_READ)
        self.say({"ready": True})
        while True:
            for key, _ in selector.select():
                if key.fd == self.wake_r:
                    self.reap()
                elif not self.requests():
                    return 0


def main() -> int:
    zygote_stdout = os.dup(1)
    os.dup2(2, 1)  # the import's prints go to the log
    import litellm.proxy.proxy_server  # noqa: F401 - the import every Pod shares
    from litellm import run_server  # the ``litellm`` console script's entry point

    return Zygote(run_server, zygote_stdout).serve()


if __name__ == "__main__":
    sys.exit(main())
