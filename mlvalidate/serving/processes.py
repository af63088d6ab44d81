"""Every process of a launched server, found, signalled and reaped (POSIX; read with psutil).

The server is started in a new session, so it and every process it spawns (EngineCore,
workers, resource tracker) share one process group. Some leave it: a process that called
setsid() and lost its parent before we ever looked. To find those too, on Linux the launching
process becomes a child subreaper while a server runs (prctl PR_SET_CHILD_SUBREAPER), so
orphans of the server's tree are reparented to it instead of init and stay among its
descendants; the server's processes are told apart from other children of the launching
process by a token in their environment (LAUNCH_TOKEN_ENV, which descendants inherit) or by
descending from the server. Descendants are remembered by (pid, create time), so a reused pid
is never signalled, and orphans reparented to us are reaped once dead. Without prctl (macOS,
other POSIX) orphans go to init: a `ProcessTree` then scans every process for the token once
before stopping, which finds them unless they dropped their environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

import psutil

# set in the server's environment (a fresh value per server); descendants inherit it, which
# is how a process orphaned out of the server's tree is recognised as the server's
LAUNCH_TOKEN_ENV = "MLVALIDATE_LAUNCH_TOKEN"


def live(proc: psutil.Process) -> bool:
    """`proc` still runs: the same process (pid and create time), not a zombie."""
    try:
        return proc.is_running() and proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    pids = []
    try:
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == pgid and live(proc):
                    pids.append(proc.pid)
            except (ProcessLookupError, PermissionError):
                continue  # exited meanwhile / another session where the OS hides it
    except psutil.Error:  # no process table to read: the kernel's answer, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    return sorted(pids)


# ----------------------------------------------------------------------------------------
# the launching process as a child subreaper (Linux)
# ----------------------------------------------------------------------------------------
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
_subreaper_lock = threading.Lock()
_subreaper_users = 0  # servers of this process that rely on it
_subreaper_ours = False  # we turned it on (and so turn it off again)


def _prctl(option: int, arg: int | ctypes.c_int) -> bool:
    """prctl(2) through libc; False where there is none (not Linux) or it fails."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        arg2 = ctypes.byref(arg) if isinstance(arg, ctypes.c_int) else ctypes.c_ulong(arg)
        return libc.prctl(ctypes.c_int(option), arg2, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
    except (OSError, AttributeError, TypeError):
        return False


def is_subreaper() -> bool:
    """Is this process a child subreaper (orphans of its descendants are reparented to it)?"""
    flag = ctypes.c_int(0)
    return _prctl(PR_GET_CHILD_SUBREAPER, flag) and flag.value != 0


def acquire_subreaper() -> bool:
    """Make this process a child subreaper while a server runs (Linux >= 3.4): orphaned
    descendants are then reparented to us, not to init, so none escapes. Returns whether this
    process is one; False where prctl is unavailable (non-Linux) — then the caller falls back
    to the environment-token scan (see the module docstring)."""
    global _subreaper_users, _subreaper_ours
    with _subreaper_lock:
        if _subreaper_users == 0 and not is_subreaper():
            _subreaper_ours = _prctl(PR_SET_CHILD_SUBREAPER, 1)
        active = is_subreaper()
        if active:
            _subreaper_users += 1
        return active


def release_subreaper() -> None:
    """Undo one acquire_subreaper(); the last one turns it off if we turned it on."""
    global _subreaper_users, _subreaper_ours
    with _subreaper_lock:
        _subreaper_users = max(0, _subreaper_users - 1)
        if _subreaper_users == 0 and _subreaper_ours:
            _prctl(PR_SET_CHILD_SUBREAPER, 0)
            _subreaper_ours = False


# ----------------------------------------------------------------------------------------
# one server's processes
# ----------------------------------------------------------------------------------------
class ProcessTree:
    """The processes of one server: its leader (a Popen that is its own session and group
    leader), the group, and every descendant ever seen, by (pid, create time), so that one that
    left the group or was reparented is found again and never confused with a later process of
    that pid. `token` is the LAUNCH_TOKEN_ENV value in the server's environment."""

    def __init__(self, token: str):
        self.token = token
        self.leader: subprocess.Popen | None = None
        self.tracked: dict[tuple[int, float], psutil.Process] = {}
        self.subreaper = False  # this tree holds acquire_subreaper()

    def hold_subreaper(self) -> None:
        """Before the first process of the server exists."""
        self.subreaper = acquire_subreaper()

    def let_go_subreaper(self) -> None:
        if self.subreaper:
            self.subreaper = False
            release_subreaper()

    def adopt(self, leader: subprocess.Popen) -> None:
        """The server itself, by (pid, create time)."""
        self.leader = leader
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(leader.pid)
            self.tracked[(proc.pid, proc.create_time())] = proc

    def track(self, everywhere: bool = False) -> None:
        """Remember every process of the server by (pid, create time). Candidates are this
        process's descendants (with a subreaper, orphans of the server's tree among them) or,
        with `everywhere`, all processes. A candidate is the server's if it is the server,
        was seen before, descends from one of the server's, or carries the server's token in
        its environment; other children of this process are left alone."""
        if self.leader is None:
            return
        try:
            procs = list(psutil.process_iter()) if everywhere else psutil.Process().children(recursive=True)
        except psutil.Error:
            return
        by_pid = {proc.pid: proc for proc in procs}
        verdict: dict[int, bool] = {}

        def is_ours(pid: int | None) -> bool:
            if pid is None or pid not in by_pid:
                return False
            if pid in verdict:
                return verdict[pid]
            verdict[pid] = False  # a cycle (pid reuse mid-scan) ends here
            proc = by_pid[pid]
            try:
                key = (pid, proc.create_time())
                ours = (key in self.tracked or is_ours(proc.ppid())
                        or proc.environ().get(LAUNCH_TOKEN_ENV) == self.token)  # fmt: skip
            except psutil.Error:  # gone, a zombie whose environment is unreadable, or not ours to read
                return False
            verdict[pid] = ours
            if ours:
                self.tracked.setdefault(key, proc)
            return ours

        for pid in by_pid:
            is_ours(pid)

    def reap_orphans(self) -> None:
        """Collect the exit status of the server's processes that were reparented to us and
        died (zombies otherwise); the leader is left to its Popen."""
        me = os.getpid()
        for (pid, _), proc in list(self.tracked.items()):
            if self.leader is not None and pid == self.leader.pid:
                continue
            try:
                if proc.ppid() != me or proc.status() != psutil.STATUS_ZOMBIE or not proc.is_running():
                    continue
            except psutil.Error:
                continue
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)

    def alive_pids(self) -> list[int]:
        """Live processes of the server: its group, plus every other process of it (descendants
        that left the group, orphans reparented to us, any process carrying its token)."""
        if self.leader is None:
            return []
        self.track()
        pids = set(group_alive(self.leader.pid))
        pids.update(proc.pid for proc in self.tracked.values() if live(proc))
        return sorted(pids)

    def signal_all(self, sig: int) -> None:
        """`sig` to the whole group and to every tracked process outside it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.leader.pid, sig)
        group = set(group_alive(self.leader.pid))
        for proc in list(self.tracked.values()):
            if proc.pid not in group and live(proc):
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)  # psutil refuses if the pid now names another process

    def wait_gone(self, timeout: float) -> bool:
        """Until no process of the server is alive (True) or `timeout` s passed (False)."""
        deadline = time.monotonic() + timeout
        while True:
            self.leader.poll()  # reap the leader as soon as it exits
            self.reap_orphans()
            if not self.alive_pids():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def terminate(self, grace: float, kill_wait: float) -> tuple[float | None, list[int]]:
        """SIGTERM everything, wait up to `grace` s, then SIGKILL what is left and wait up to
        `kill_wait` s; the orphans reparented to us are reaped. Returns (seconds after SIGTERM
        when SIGKILL was sent, the pids it was sent to), or (None, []) when SIGTERM sufficed."""
        # with a subreaper every orphan is among our descendants; without one, look everywhere
        self.track(everywhere=not self.subreaper)
        self.signal_all(signal.SIGTERM)
        t_term = time.monotonic()
        killed_after, killed = None, []
        if not self.wait_gone(grace):
            killed = self.alive_pids()
            killed_after = time.monotonic() - t_term
            self.signal_all(signal.SIGKILL)
            self.wait_gone(kill_wait)
        with contextlib.suppress(Exception):
            self.leader.wait(timeout=1)
        self.reap_orphans()
        return killed_after, killed
