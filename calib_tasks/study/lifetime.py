"""Keeping each point of a study to one live run: child processes that do not outlive the
study, and locks that do not outlive their holders.

A harness process runs in a process group of its own, killed when the call that started it
ends in any way; on Linux the kernel also kills it when the study process dies, even by
SIGKILL (the parent-death signal of ``prctl``; where that is missing, only the ways of ending
that run Python code are covered). A lock is an ``flock`` on a lock file, which the kernel
releases once every process holding the file open has died, so no killed run leaves a lock
behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# process groups started by run_tied that are not reaped yet (so that their pids name them)
_running: set[int] = set()
_running_lock = threading.Lock()


class LockHeld(Exception):
    """Another open file (of this or another process) holds the lock on ``path``; ``holder``
    is the pid written into the lock file by whoever took it (None when unreadable)."""

    def __init__(self, path: Path, holder: int | None) -> None:
        super().__init__(f"{path} is locked (by pid {holder})")
        self.path = path
        self.holder = holder


def take_lock(path: Path, *, wait: bool = False) -> TextIO:
    """Take the lock on ``path`` (the file is created if missing and kept afterwards) and write
    this process's pid into it; returns the open lock file. The lock lasts until that file is
    closed here (e.g. by a ``with`` block) and in every child process it was passed on to, or
    until those processes die. When another open file holds the lock: with ``wait``, wait until
    it is let go (Ctrl-C interrupts the wait), else raise LockHeld at once."""
    lock = path.open("a+", encoding="utf-8")
    with contextlib.ExitStack() as on_failure:
        on_failure.callback(lock.close)
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            lock.seek(0)
            text = lock.read().strip()
            raise LockHeld(path, int(text) if text.isdigit() else None) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        on_failure.pop_all()
    return lock


def lock_holder(path: Path) -> LockHeld | None:
    """Whether another open file holds the lock on ``path`` (a LockHeld naming the pid written
    into it), without taking the lock for longer than a moment and without writing into the
    file; None when the lock is free or the file missing."""
    try:
        probe = path.open("r", encoding="utf-8")
    except FileNotFoundError:
        return None
    with probe:
        try:
            fcntl.flock(probe.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = probe.read().strip()
            return LockHeld(path, int(text) if text.isdigit() else None)
        fcntl.flock(probe.fileno(), fcntl.LOCK_UN)
    return None


def kill_running() -> int:
    """Kill (SIGKILL) the process group of every command that ``run_tied`` is running now, in
    any thread of this process; their ``run_tied`` calls then return. Returns how many."""
    with _running_lock:
        for pid in _running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        return len(_running)


def _die_with_this_process() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when the calling thread of this
    process ends, and ends the child at once if that already happened; None where ``prctl``
    is missing (not Linux)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL))
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def run_tied(command: Sequence[str], **popen: Any) -> int:
    """Run ``command`` (``popen``: further ``subprocess.Popen`` arguments) until it exits and
    return its exit status (negative: the signal that killed it). It runs in a process group
    of its own that does not outlive this call: when the command exits, or the wait is
    interrupted (Ctrl-C, any exception), whatever is left of the group is killed; and where
    Linux's parent-death signal is available, the command is killed when this process dies in
    any way, SIGKILL included (from whichever thread of this process called it: the signal
    follows the calling thread). ``kill_running`` kills it from another thread."""
    with _running_lock:
        proc = subprocess.Popen(
            command, start_new_session=True, preexec_fn=_die_with_this_process(), **popen
        )
        _running.add(proc.pid)
    try:
        # exited but not reaped, so that its pid still names its group for killpg
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    finally:
        with _running_lock:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            _running.discard(proc.pid)
        proc.wait()
    return proc.returncode
