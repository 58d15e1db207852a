"""The life of one sandbox child, seen from the parent: start it, read it, kill it, delete its folder.

:mod:`dpo_lab.sandbox` decides *what* a child runs and what its answers mean (the layers, the
tests, the verdict); this module does the process work, in the order it happens:

1. :func:`spawn_and_collect` writes the job into a fresh temporary folder and starts the child
   (``python -s -S -B``, an empty environment, its own session), its code passed on the command
   line (``dpo_lab/_sandbox_child.py``, compiled once here when the bytecode versions match);
2. it reads the program's output and the result channel until both close or the wall-clock
   deadline passes, capping what it keeps but draining everything, so a chatty program never
   blocks on a full pipe;
3. after *every* run it kills the child's whole process group before reaping the child (while
   the child is a zombie its group id cannot be reused, so the kill reaches only its group);
4. :func:`remove_tree` deletes the folder without ever following a symlink and without
   recursion, however deep or oddly permissioned the child left it; after half a second the
   rest goes to a background thread (:func:`wait_for_cleanup`).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PAYLOAD = "_payload.json"  # how the program and calls reach the child; the child deletes it before the program runs
MAX_RESULT_BYTES = 1 << 20  # the result channel is capped too: a program could flood it


@functools.cache
def _child_source() -> str:
    text = (Path(__file__).with_name("_sandbox_child.py")).read_text(encoding="utf-8")
    return text + "\nmain()\n"


@functools.cache
def _child_compiled() -> str:
    """The child's code compiled once here, marshalled, base64: a child of the same bytecode
    version skips compiling 500 lines (a third of its start-up CPU). Marshal goes one way only,
    from us to the child; nothing the child sends back is ever unmarshalled or unpickled."""
    import binascii
    import marshal

    code = compile(_child_source(), "<dpo_lab sandbox child>", "exec", optimize=2)
    return binascii.b2a_base64(marshal.dumps(code), newline=False).decode("ascii")


def _child_argv(python: str, magic: str | None) -> list:
    import importlib.util

    if magic is not None and magic == importlib.util.MAGIC_NUMBER.hex():
        loader = "import binascii, marshal, sys; exec(marshal.loads(binascii.a2b_base64(sys.argv[1])))"
        return [python, "-s", "-S", "-B", "-c", loader, _child_compiled()]
    return [python, "-s", "-S", "-B", "-c", _child_source()]


def _collect(proc, deadline: float, max_output: int):
    """Read the child's output (stdout) and results (stderr) until both close or the deadline.

    Keeps at most ``max_output`` bytes of output but drains (and counts) everything, so a
    chatty program never blocks on a full pipe. Returns (output, n_bytes, results, timed_out).
    """
    output, n_bytes, results = bytearray(), 0, bytearray()
    if sys.platform == "win32":  # no select() on pipes: threads, then cap after the fact
        try:
            out, res = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return b"", 0, b"", True
        return out[:max_output], len(out), res[:MAX_RESULT_BYTES], False
    try:  # readable when the child exits (Linux >= 5.3); it is not reaped, so its group id stays ours
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = -1
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "output")
        sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "results")
        if pidfd >= 0:
            sel.register(pidfd, selectors.EVENT_READ, "exit")
        try:
            while len(sel.get_map()) > (pidfd >= 0 and pidfd in sel.get_map()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return bytes(output), n_bytes, bytes(results), True
                for key, _ in sel.select(left):
                    if key.data == "exit":  # the child is done: whatever it started holding our pipes dies now
                        sel.unregister(pidfd)
                        _signal_group(proc)
                        continue
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        sel.unregister(key.fd)
                    elif key.data == "output":
                        n_bytes += len(chunk)
                        output += chunk[: max(0, max_output - len(output))]
                    elif len(results) < MAX_RESULT_BYTES:
                        results += chunk[: MAX_RESULT_BYTES - len(results)]
        finally:
            if pidfd >= 0:
                os.close(pidfd)
    return bytes(output), n_bytes, bytes(results), not _wait_for_exit(proc, deadline)


def _wait_for_exit(proc, deadline: float) -> bool:
    """Wait until the child exits but do not reap it: while it is a zombie, its process
    group id cannot be reused, so the group kill that follows reaches only its own group."""
    left = max(0.0, deadline - time.monotonic())
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # macOS, old kernels: reap with a timeout instead
        try:
            proc.wait(timeout=left)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(pidfd, selectors.EVENT_READ)
            return bool(sel.select(left))
    finally:
        os.close(pidfd)


def _signal_group(proc) -> None:
    """SIGKILL the child's process group (the child leads its own session and group)."""
    kill = getattr(signal, "SIGKILL", None)
    if kill is not None and hasattr(os, "killpg"):
        try:
            os.killpg(proc.pid, kill)
        except (ProcessLookupError, PermissionError):
            pass


def _kill_group(proc) -> None:
    """SIGKILL the child's whole process group (its session), then the child; reap it."""
    _signal_group(proc)
    if proc.returncode is None:
        try:
            proc.kill()
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # stuck in the kernel (a dead disk): give up waiting, not the run
        pass


_CLEANUP_BUDGET = 0.5  # seconds of deleting inside run_tests; a bigger tree finishes in the background
_cleaner: ThreadPoolExecutor | None = None
_cleanups: list = []
_cleaner_lock = threading.Lock()


def remove_tree(path: str, budget: float | None = _CLEANUP_BUDGET) -> None:
    """Delete the temporary folder, never following a symlink, never raising.

    No recursion (a tree may be thousands of levels deep): each non-empty sub-folder's
    entries are moved up to the top with names the child could not guess, then the emptied
    folder is removed, until the top is empty. Folders the child made unreadable are made
    ours again first (as a non-root parent without seccomp, the child could chmod them).
    A child can make folders far faster than some disks delete them (about 3 ms each on a
    disk mounted with ``discard``), so after ``budget`` seconds the rest is deleted by a
    background thread (:func:`wait_for_cleanup`; the interpreter waits for it at exit).
    """
    deadline = None if budget is None else time.monotonic() + budget
    try:
        if _flatten_and_remove(path, deadline):
            return
    except Exception:  # noqa: BLE001 - cleanup must never raise; the fallback below tries again
        pass
    if budget is not None and os.path.lexists(path):
        global _cleaner
        with _cleaner_lock:
            if _cleaner is None:
                _cleaner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpo_sandbox_cleanup")
            _cleanups.append(_cleaner.submit(remove_tree, path, None))
        return
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        warnings.warn(f"dpo_lab.sandbox: could not remove {path}", RuntimeWarning, stacklevel=3)


def wait_for_cleanup(timeout: float | None = None) -> bool:
    """Wait until every temporary folder handed to the background is deleted; True if all are."""
    with _cleaner_lock:
        pending = list(_cleanups)
    end = None if timeout is None else time.monotonic() + timeout
    for future in pending:
        try:
            future.result(timeout=None if end is None else max(0.0, end - time.monotonic()))
        except Exception:  # noqa: BLE001 - a timeout, or a failure remove_tree already warned about
            return False
    with _cleaner_lock:
        _cleanups[:] = [f for f in _cleanups if not f.done()]
    return True


def _flatten_and_remove(top: str, deadline: float | None = None) -> bool:
    """Remove ``top``; False if ``deadline`` (time.monotonic) came first (call again to go on)."""
    token, moved = secrets.token_hex(8), 0
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0)
    try:
        os.chmod(top, 0o700)
    except OSError:
        pass
    top_fd = os.open(top, flags)
    try:
        for _ in range(10_000_000):  # a bound, never reached: each pass removes or moves something
            with os.scandir(top_fd) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            if not entries:
                break
            for name, is_dir in entries:
                if deadline is not None and time.monotonic() > deadline:
                    return False
                if not is_dir:
                    os.unlink(name, dir_fd=top_fd)  # a file, a symlink (never followed), a fifo...
                    continue
                try:  # lstat said it is a folder (not a link) and the child is dead: chmod is safe
                    os.chmod(name, 0o700, dir_fd=top_fd)
                except OSError:
                    pass
                sub = os.open(name, flags, dir_fd=top_fd)
                try:
                    with os.scandir(sub) as it:
                        names = [e.name for e in it]
                    for child in names:
                        moved += 1
                        os.rename(child, f".dpo-rm-{token}-{moved}", src_dir_fd=sub, dst_dir_fd=top_fd)
                finally:
                    os.close(sub)
                os.rmdir(name, dir_fd=top_fd)
    finally:
        os.close(top_fd)
    os.rmdir(top)
    return True


def spawn_and_collect(python: str, job: dict, user, timeout: float, max_output: int, magic: str | None = None):
    """Start the child in a fresh temporary folder, collect, kill its group, clean up.

    Returns (results, output, n_bytes, timed_out, pid, seconds, returncode).
    """
    tmp = tempfile.mkdtemp(prefix="dpo_sandbox_")
    proc = None
    start = time.monotonic()
    try:
        with open(os.path.join(tmp, PAYLOAD), "w", encoding="utf-8") as f:
            json.dump(job, f)
        if user is not None:  # the folder must belong to the child, which drops to this user itself
            os.chown(tmp, user, user)
            os.chown(os.path.join(tmp, PAYLOAD), user, user)
        proc = subprocess.Popen(
            _child_argv(python, magic),
            cwd=tmp,
            env={"PYTHONHASHSEED": "0", "TMPDIR": tmp},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,  # the program's stdout and stderr, in the order it wrote them
            stderr=subprocess.PIPE,  # the result channel (the child moves its stderr onto stdout)
            start_new_session=sys.platform != "win32",
        )
        output, n_bytes, raw, timed_out = _collect(proc, start + timeout, max_output)
    finally:
        if proc is not None:
            _kill_group(proc)  # after every run: nothing the child started outlives it
            for stream in (proc.stdout, proc.stderr):
                try:
                    stream.close()
                except OSError:
                    pass
        remove_tree(tmp)
    seconds = time.monotonic() - start
    return raw, output, n_bytes, timed_out, proc.pid, seconds, proc.returncode
