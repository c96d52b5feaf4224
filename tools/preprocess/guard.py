"""One run per output folder (a lock file), and worker processes that end with the run that started them."""
import ctypes
import ctypes.util
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from datasets.errors import DataError

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 0.5


@contextmanager
def output_lock(path: Path):
    """Hold an exclusive lock on `path` (created if missing) for the block; the file says who holds it.

    The lock is an flock: the kernel drops it when the holder (and every process that inherited it) is gone,
    so a killed run leaves no live lock behind. A second run on the same folder raises DataError naming the
    file, its holder, and how to clear a lock left by a file system that keeps it (e.g. NFS).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown holder"
            raise DataError(path, f"another preprocess run is writing into this folder ({holder})",
                            f"wait for it to end, or stop it; if no such process runs any more (a stale lock, "
                            f"e.g. on a network file system), delete {path} and run again") from None
        except OSError as e:  # a file system without locks: run, but say that nothing guards the folder
            print(f"warning: {path}: cannot lock ({e}); make sure no other preprocess run writes into this folder",
                  file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker as soon as the process that started it ends (SIGKILL, SIGTERM, crash),
    so no orphan keeps taking queued videos or writing into the output folder.

    Linux: the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG). Elsewhere a daemon thread
    polls the parent pid. Either way a parent that is already gone ends the worker at once.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            _poll_parent(parent_pid)
    else:
        _poll_parent(parent_pid)
    if os.getppid() != parent_pid:  # died before prctl took effect
        os._exit(1)


def _poll_parent(parent_pid: int) -> None:
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()
