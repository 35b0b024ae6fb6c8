"""Many real ``kedro run`` commands at the price of one interpreter start (test harness).

A *zygote* process imports Kedro, JAX, Flax, pandas, matplotlib and the project once —
most of a ``kedro run``'s start-up time on a small machine — and then forks one
child per command. The child runs Kedro's own command line (``kedro run ...``) from
scratch: bootstrap, session, hooks, runner, exit code. JAX is imported but no device
is touched before the fork, so each child initialises its own backend.

Protocol (JSON lines on stdin/stdout):
``{"op": "start", "args": [...], "env": {...}, "log": path}`` → ``{"pid": n}``;
``{"op": "wait", "pid": n}`` → ``{"rc": exit code, negative for a signal}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path


def _preload(project: Path) -> None:
    sys.path.insert(0, str(project / "src"))
    import flax.linen  # noqa: F401
    import jax.numpy  # noqa: F401
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import optax  # noqa: F401
    import pandas  # noqa: F401
    import scipy.linalg  # noqa: F401
    from kedro.framework.cli import cli  # noqa: F401
    from kedro.framework.session import KedroSession  # noqa: F401

    from linearized_kedro import pipeline_registry

    pipeline_registry.all_pipelines()  # imports every node module


def _child(command: dict) -> None:
    fd = os.open(command["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(command.get("env") or {})
    sys.argv = ["kedro", *command["args"]]
    code = 1
    try:
        from kedro.framework.cli.cli import main

        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(project: Path) -> None:
    # Replies go to a private copy of stdout; anything the imports print goes to stderr.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    os.chdir(project)
    _preload(project)

    def reply(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    reply({"ready": True})
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "start":
            pid = os.fork()
            if pid == 0:
                replies.close()
                _child(command)
            reply({"pid": pid})
        elif command["op"] == "wait":
            _, status = os.waitpid(command["pid"], 0)
            reply({"rc": os.waitstatus_to_exitcode(status)})


class Zygote:
    """Client: starts the zygote for a project copy and runs ``kedro`` commands through it."""

    def __init__(self, project: Path, env: dict[str, str]):
        self.project = Path(project)
        self.logs = self.project / "zygote-logs"
        self.logs.mkdir(exist_ok=True)
        self._count = 0
        self._proc = subprocess.Popen(
            [sys.executable, __file__, str(self.project)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert self._read() == {"ready": True}

    def _read(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"zygote died (rc={self._proc.poll()})")
        return json.loads(line)

    def _send(self, message: dict) -> dict:
        self._proc.stdin.write(json.dumps(message) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def start(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, Path]:
        """Starts ``kedro <args>``; returns (pid, log file)."""
        self._count += 1
        log = self.logs / f"{self._count:03d}.log"
        reply = self._send({"op": "start", "args": list(args), "env": env or {}, "log": str(log)})
        return reply["pid"], log

    def wait(self, pid: int) -> int:
        """Waits for a child; its exit code (``-signal`` if killed)."""
        return self._send({"op": "wait", "pid": pid})["rc"]

    def run(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        """Runs ``kedro <args>`` to the end; returns (exit code, log text)."""
        start = time.perf_counter()
        pid, log = self.start(*args, env=env)
        rc = self.wait(pid)
        self.seconds = time.perf_counter() - start
        return rc, log.read_text(errors="replace")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=30)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
