"""The processes that write a log: who holds a file open for writing, pausing them, telling them to reopen.

After a rename the writer keeps writing to the renamed inode until it reopens: `SIG<reopen_signal>` to the pid in
`pidfile`, or `reopen_command` (run without a shell), or nothing for writers that notice the rename themselves.
Who still holds a file is read from `/proc/*/fd` (with the access mode from fdinfo), so only a file no process on
this host has open for writing is compressed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Generator
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path

from trading_ops.logs.report import ClassReport, LogRotationError
from trading_ops.policy import LogPath

# How long writers may stay paused during a copytruncate before the watchdog resumes them regardless.
PAUSE_LIMIT_SECONDS = 10

Inode = tuple[int, int]


def open_for_writing(inodes: set[Inode]) -> dict[Inode, set[int]]:
    """Pids (other than this one) holding each inode open for writing, from /proc/*/fd and fdinfo flags."""
    found: dict[Inode, set[int]] = {}
    if not inodes:
        return found
    me = os.getpid()
    for proc in os.scandir("/proc"):
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{proc.name}/fd")
        except OSError:
            continue  # gone, or another user's process we may not inspect
        for fd in fds:
            try:
                stat = os.stat(f"/proc/{proc.name}/fd/{fd}")
                if (stat.st_dev, stat.st_ino) not in inodes:
                    continue
                with open(f"/proc/{proc.name}/fdinfo/{fd}") as info:
                    flags = next(int(line.split()[1], 8) for line in info if line.startswith("flags:"))
            except (OSError, StopIteration):
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                found.setdefault((stat.st_dev, stat.st_ino), set()).add(int(proc.name))
    return found


def _is_stopped(pid: int) -> bool:
    """Every thread of `pid` is stopped (or the process is gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        states = []
        for task_id in tasks:
            with open(f"/proc/{pid}/task/{task_id}/stat") as stat:
                states.append(stat.read().rpartition(")")[2].split()[0])
    except OSError:
        return True
    return all(state in ("T", "t", "Z", "X") for state in states)


@contextmanager
def writers_paused(inode: Inode) -> Generator[list[int]]:
    """SIGSTOP every process writing to `inode`; yields the pids that could NOT be paused. Resumes them on exit."""
    pids = sorted(open_for_writing({inode}).get(inode, set()))
    stopped: list[int] = []
    unpaused: list[int] = []
    watchdog = None
    try:
        if pids:
            # Resumes the writers even if this task is killed while they are paused.
            watchdog = subprocess.Popen(
                ["/bin/sh", "-c", f"sleep {PAUSE_LIMIT_SECONDS}; kill -CONT {' '.join(map(str, pids))}"],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            except PermissionError:
                unpaused.append(pid)
                continue
            stopped.append(pid)
        deadline = time.monotonic() + 2
        while not all(_is_stopped(pid) for pid in stopped) and time.monotonic() < deadline:
            time.sleep(0.001)
        unpaused += [pid for pid in stopped if not _is_stopped(pid)]
        yield unpaused
    finally:
        for pid in stopped:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()


def reopen_writers(path: LogPath, report: ClassReport, timeout: timedelta) -> None:
    """Tell the writers of `path` to reopen their files after a rename; a dry run reads the pidfile and finds the
    command's program, so a broken reopen setting fails the dry run as it would fail the real one."""
    if path.pidfile:
        try:
            pid = int(Path(path.pidfile).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            raise LogRotationError(f"Pidfile {path.pidfile} holds no readable pid.") from None
        if report.act(f"send SIG{path.reopen_signal} to pid {pid} (from {path.pidfile}) to reopen its logs"):
            os.kill(pid, getattr(signal, f"SIG{path.reopen_signal}"))
    elif path.reopen_command:
        argv = shlex.split(path.reopen_command)
        if shutil.which(argv[0]) is None:
            raise LogRotationError(
                f"The reopen_command of {path.directory} runs {argv[0]}, which is not an executable program here."
            )
        if report.act(f"run `{path.reopen_command}` to reopen the logs of {path.directory}"):
            subprocess.run(argv, check=True, capture_output=True, timeout=timeout.total_seconds())
