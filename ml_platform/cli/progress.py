"""A run's progress on the terminal while it executes in this process: which step, how many done.

The run executes in the main thread (dbt and Dagster expect it); a background thread reads the run's
step stats from the instance every half second and updates rich's status line. Rich draws it on a
terminal only, so pipes and captured output get none of it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import uuid
from collections.abc import Iterator

from dagster import DagsterRunStatus

from ml_platform.cli.common import console

POLL_SECONDS = 0.5
STOP_RESEND_SECONDS = 0.5


def describe_progress(label: str, total_steps: int, step_stats) -> str:
    """`label: 3/8 steps done, running random_forest_model, gradient_boosting_model`."""
    done = [step.step_key for step in step_stats if step.end_time is not None]
    running = [step.step_key for step in step_stats if step.end_time is None]
    total = max(total_steps, len(step_stats))
    line = f"{label}: {len(done)}/{total} steps done"
    return f"{line}, running {', '.join(running)}" if running else line


@contextlib.contextmanager
def run_progress(instance, label: str, job) -> Iterator[str]:
    """Show the progress of a run of `job` (an op per step) whose id this yields: pass it to
    `execute_in_process(run_id=...)`."""
    run_id, total_steps = str(uuid.uuid4()), len(job.nodes)
    finished = threading.Event()
    with console.status(f"{label} ...") as status:

        def poll() -> None:
            while not finished.wait(POLL_SECONDS):
                # Until the run has started its event log does not exist; reading it would create it.
                run = instance.get_run_by_id(run_id)
                if run is not None and run.status not in (DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING):
                    status.update(describe_progress(label, total_steps, instance.get_run_step_stats(run_id)))

        poller = threading.Thread(target=poll, name="run-progress", daemon=True)
        poller.start()
        try:
            yield run_id
        finally:
            finished.set()
            poller.join()


class Signals:
    """The stop signals (SIGINT, SIGTERM) this process received, whoever's handler was in place."""

    def __init__(self, read_fd: int):
        self._read_fd: int | None = read_fd
        self._received: int | None = None
        self.done = threading.Event()

    def finished(self) -> None:
        """The work a stop signal interrupts is over: no more re-sent SIGINTs."""
        self.done.set()

    def received(self) -> int | None:
        """The first stop signal received so far (until the watch ended), or None."""
        if self._read_fd is not None:
            with contextlib.suppress(BlockingIOError):
                for number in os.read(self._read_fd, 64):
                    if self._received is None and number in (signal.SIGINT, signal.SIGTERM):
                        self._received = number
        return self._received

    def close(self) -> None:
        self.received()
        os.close(self._read_fd)
        self._read_fd = None


@contextlib.contextmanager
def watch_signals() -> Iterator[Signals]:
    """SIGTERM stops the command as Ctrl-C does, and `received()` tells afterwards that one came.

    While a run executes, Dagster's own handlers take both signals and turn them into the interrupted
    step's failure, so the command would go on to the next batch; the signal's number still reaches
    the wake-up pipe Python writes for every handled signal, which is how the command learns of it.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    signals = Signals(read_fd)

    def interrupt_until_done() -> None:
        # Dagster swallows a signal that lands in its own bookkeeping between steps and runs the whole
        # batch on; so once one has come, SIGINT is sent again until the run is over, and the next one
        # that lands in a step's code interrupts it.
        while not signals.done.wait(STOP_RESEND_SECONDS):
            if signals.received():
                os.kill(os.getpid(), signal.SIGINT)

    def drop_interrupts_in_callbacks(unraisable) -> None:
        # A resent SIGINT that lands in a garbage-collection callback is raised there, where Python
        # can only print it ("Exception ignored in ...") and go on; the next resend stops the run.
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous_unraisable_hook(unraisable)

    previous_unraisable_hook, sys.unraisablehook = sys.unraisablehook, drop_interrupts_in_callbacks
    resender = threading.Thread(target=interrupt_until_done, name="stop-resend", daemon=True)
    resender.start()
    try:
        yield signals
    finally:
        signals.finished()
        resender.join()
        sys.unraisablehook = previous_unraisable_hook
        signal.signal(signal.SIGTERM, previous_term)
        signal.set_wakeup_fd(previous_fd)
        signals.close()
        os.close(write_fd)
