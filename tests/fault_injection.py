"""Fault injection inside a real ``kedro run`` (test harness only; never in ``src/``).

The reliability tests append this hook to a project copy's ``settings.py``. The
environment variable ``LINEARIZED_KEDRO_FAULT`` selects one fault:

- ``count``: inject nothing; log every save (to ``LINEARIZED_KEDRO_FAULT_LOG``);
- ``kill-mid:N``: SIGKILL the process in the middle of writing the N-th saved
  dataset's file (some bytes of its temporary file are on disk);
- ``kill-after:N``: SIGKILL right after the N-th save returned (published, not yet
  committed);
- ``enospc:N``: the N-th save's write fails with ``ENOSPC`` after some bytes, as on a
  full disk;
- ``pause-tile:N``: SIGSTOP the process after its N-th Gram tile is stored (a run
  "paused" mid-computation; SIGCONT resumes it).

Saves are counted in order (the runner is sequential); the N-th one is the N-th
``before_dataset_saved`` call, memory datasets included.
"""

from __future__ import annotations

import errno
import os
import signal

from kedro.framework.hooks import hook_impl

ENV = "LINEARIZED_KEDRO_FAULT"
LOG_ENV = "LINEARIZED_KEDRO_FAULT_LOG"


def _parse(spec: str | None) -> tuple[str, int]:
    if not spec:
        return "", 0
    kind, _, count = spec.partition(":")
    return kind, int(count or 0)


class FaultInjectionHook:
    """Injects the fault named by ``$LINEARIZED_KEDRO_FAULT`` (read when the run starts)."""

    def __init__(self) -> None:
        self._saves = 0
        self._kind, self._at = "", 0

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        self._saves = 0
        self._kind, self._at = _parse(os.environ.get(ENV))
        if self._kind == "pause-tile":
            self._pause_after_tiles(self._at)

    @hook_impl
    def before_dataset_saved(self, dataset_name: str, data, node) -> None:
        self._saves += 1
        log = os.environ.get(LOG_ENV)
        if log:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"{self._saves}\t{dataset_name}\n")
        if self._saves != self._at:
            return
        if self._kind == "kill-mid":
            self._fail_next_write(kill=True)
        elif self._kind == "enospc":
            self._fail_next_write(kill=False)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data, node) -> None:
        if self._kind == "kill-after" and self._saves == self._at:
            os.kill(os.getpid(), signal.SIGKILL)

    @staticmethod
    def _fail_next_write(kill: bool) -> None:
        """The next stored write is cut after half its bytes (then SIGKILL or ENOSPC)."""
        from linearized_kedro.datasets import atomic

        original = atomic.HashingWriter.write

        def write(self, data):
            atomic.HashingWriter.write = original  # one fault only
            view = memoryview(data).cast("B")
            original(self, view[: len(view) // 2])
            self.flush()
            if kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError(errno.ENOSPC, "No space left on device (injected)")

        atomic.HashingWriter.write = write

    @staticmethod
    def _pause_after_tiles(count: int) -> None:
        from linearized_kedro.datasets import gram_blocks

        original = gram_blocks.GramBlockStore.put
        stored = {"n": 0}

        def put(self, key, tile):
            original(self, key, tile)
            stored["n"] += 1
            if stored["n"] == count:
                os.kill(os.getpid(), signal.SIGSTOP)

        gram_blocks.GramBlockStore.put = put
