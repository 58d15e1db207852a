"""Run untrusted, model-written Python against unit tests, in a separate limited process.

In notebook 04 a language model writes programs and unit tests judge them. Those programs
are untrusted: a sampled program may loop forever, allocate all memory, fork, delete
files or print gigabytes. None of it ever runs in the notebook's own kernel. Instead,
:func:`run_tests` starts a fresh Python process for every program and stacks several
defences, each a backstop for the one before:

1. **A separate process** (``python -s -S -B``): no site-packages (so the standard library
   only: no numpy), no user site, no ``.pyc`` writes; the program can crash or exhaust
   *that* process only. It runs in its
   own session (``start_new_session``), so killing "its process group" never reaches us,
   and we can kill the whole group at the end.
2. **An empty environment**: only ``PYTHONHASHSEED=0`` (set orders are the same every
   run; with ``random.seed(0)`` in the runner, the judge is deterministic) and ``TMPDIR``.
   Secrets in our ``os.environ`` (API tokens) are not visible to the program. (We do not
   use ``python -I``: it would also ignore our ``PYTHONHASHSEED``.)
3. **A fresh temporary working directory**, made for this run and deleted afterwards.
4. **OS resource limits** (``resource.setrlimit``, set by the child on itself, hard and
   soft, before the untrusted code runs; the kernel enforces them whatever the code does):

   * ``RLIMIT_CPU``: CPU seconds; the kernel sends SIGXCPU, then SIGKILL. A backstop
     that works even if *we* die and cannot enforce the wall clock.
   * ``RLIMIT_AS``: address space, so a huge allocation raises ``MemoryError`` in the
     child instead of swapping the machine to death.
   * ``RLIMIT_NPROC = 0``: no new processes or threads (for a non-root user; root
     ignores it, see 6).
   * ``RLIMIT_FSIZE``: the largest file it may write (a write past it fails with EFBIG).
   * ``RLIMIT_NOFILE``: a few open files, so it cannot hoard descriptors.
   * ``RLIMIT_CORE = 0``: a crash leaves no core dump behind.
5. **A Python audit hook** (PEP 578, ``sys.addaudithook``), installed by the runner
   before the untrusted code runs, refuses (``PermissionError``): opening files for
   writing outside the temporary directory, reading files outside it and the standard
   library, deleting/renaming/chmod-ing outside it, ``os.system``, ``subprocess``,
   ``os.exec*``/``os.spawn*``/``posix_spawn``, ``os.fork``, ``os.kill``/``killpg``,
   every ``socket`` operation, ``ctypes``, ``resource.setrlimit``, and importing the C
   modules that reach around the hook (``_posixsubprocess``, sub-interpreters,
   ``_testcapi``). Functions that act on other processes without an audit event
   (``os.pidfd_open``, ``signal.pidfd_send_signal``, ``os.setpriority``, ``os.sched_set*``)
   are deleted from their modules (a program that rebuilds ``posix`` with ``importlib``
   gets them back: see "not stopped" below).
6. **Another user**: when we are root (Colab runs notebooks as root) and the interpreter
   is readable by everyone, the child switches to ``nobody`` (uid 65534) after setting its
   limits and before the untrusted code runs (switching there, not in ``Popen(user=)``,
   keeps the cheap ``vfork`` start: 30 rather than 12 programs a second, measured from a
   process holding 800 MB). Then the kernel, not Python, stops it from killing our
   processes, writing our files, raising its limits or forking.
   :func:`describe_isolation` says whether this machine gets it.
7. **A wall-clock timeout**: we read its output until the deadline, then SIGKILL its
   whole process group. :func:`run_tests` returns within ``timeout`` plus a fraction
   of a second (plus the time to delete what the program wrote).
8. **Capped output**: we keep the first ``max_output`` bytes of stdout+stderr and only
   count the rest, so printing megabytes costs neither memory nor a hang.

What this does *not* stop, honestly:

* An audit hook is not a security boundary. It sees only what Python reports: C code
  reached another way, or a clever program that digs into the interpreter, can get
  past it (for example ``importlib.util.module_from_spec`` on ``posix`` brings back the
  deleted functions). It catches the ordinary accidents of generated code and makes the
  obvious attacks fail loudly; the OS limits (4) and the other user (6) are the real backstop.
  Without 6 (a non-root user, or a root whose Python lives in ``/root``) nothing but
  the hook stops ``os.kill(os.getppid(), 9)`` or a write to a file our user owns.
* The child can list directories, see other processes in ``/proc`` and use the CPU and
  disk inside its limits (it may fill the temporary directory with many small files
  until the timeout). There is no network namespace: sockets are refused by the hook only.
  Past the hook, even as ``nobody`` it can write to world-writable folders such as
  ``/tmp`` (files up to ``RLIMIT_FSIZE``), and the children of one :func:`run_many`
  share that uid, so they could signal each other.
* The result channel can be forged: the runner reports each test's outcome on a pipe,
  and a program that searches for that pipe (or rewrites the runner's frames) could
  report passes it did not earn. The sandbox protects the machine, not the honesty of
  the score. For a tiny model this is theoretical; for reinforcement learning against
  test results with a strong model, "hacking the judge" is a documented failure mode.
* A sleeping orphan (if we die) lives until something kills it: the CPU limit does not
  tick while it sleeps.

This needs Linux (Colab, CI): Windows has no ``resource`` module and macOS does not enforce
``RLIMIT_AS``. For real isolation use a container or VM with no network (gVisor,
Firecracker, nsjail); the interface here (program and tests in, a :class:`SandboxResult`
out) stays the same.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

STATUSES = ("ok", "failed", "error", "timeout", "killed")
NOBODY = 65534  # uid and gid of the "nobody" user on Linux
_PAYLOAD = "_payload.json"  # how the program and tests reach the child; deleted before they run
_MAX_RESULT_BYTES = 1 << 20  # the result pipe is capped too: a program could flood it


@dataclass(frozen=True)
class SandboxResult:
    """What happened to one program.

    ``status`` is one of:

    * ``ok``: the program ran and every test passed;
    * ``failed``: the program ran, some tests failed (an assert or any exception);
    * ``error``: the program itself did not run (syntax error, exception at top level)
      or the child stopped before finishing (``sys.exit`` is caught, ``os._exit`` is not);
    * ``timeout``: the wall clock or the CPU limit ran out;
    * ``killed``: a signal ended it (a segfault, SIGKILL, the CPU hard limit).

    ``test_passed[i]`` says whether test ``i`` passed; tests after a timeout count as
    failed. ``pid`` is the child's process id: proof the result came from a child.
    """

    status: str
    passed: int
    total: int
    test_passed: tuple[bool, ...]
    test_errors: tuple[str | None, ...]
    error: str | None
    output: str
    output_bytes: int
    truncated: bool
    returncode: int | None
    seconds: float
    pid: int

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0


# --------------------------------------------------------------------------------------
# The child: this function's source is what the sandboxed interpreter runs (``python -c``).
# It must be self-contained (its own imports) because nothing else of this module is sent.
# --------------------------------------------------------------------------------------
def _runner():  # pragma: no cover - runs in the child process
    import json
    import os
    import random
    import resource
    import signal
    import sys

    sys.path[:] = [p for p in sys.path if p]  # ``-c`` puts the cwd first; import only the stdlib
    sys.dont_write_bytecode = True
    with open("_payload.json") as f:
        job = json.load(f)
    os.remove("_payload.json")  # the program must not read its hidden tests

    write, exit_now, fd = os.write, os._exit, job["result_fd"]  # kept even if the program rebinds them

    def send(message):
        write(fd, (json.dumps(message) + "\n").encode())

    def describe(exc):
        try:
            return f"{type(exc).__name__}: {exc}"[:300]
        except BaseException:  # a hostile __str__
            return type(exc).__name__

    # OS limits, hard ones too, so the program cannot raise them again (as non-root; as
    # root the audit hook refuses resource.setrlimit, and we drop root below when we can).
    for name, value in job["limits"].items():
        hard = value + 1 if name == "RLIMIT_CPU" else value  # SIGXCPU at soft, SIGKILL at hard
        resource.setrlimit(getattr(resource, name), (value, hard))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too-big writes fail with EFBIG, not a kill
    if job["user"] is not None:  # give up root; from here the kernel refuses what "nobody" may not do
        os.setgroups([])
        os.setgid(job["user"])
        os.setuid(job["user"])

    if job["audit_hook"]:
        here = os.path.realpath(os.getcwd())
        readable = [here] + [os.path.realpath(p) for p in sys.path]  # the temp dir and the stdlib
        refused = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                   "subprocess.Popen", "os.kill", "os.killpg", "resource.setrlimit", "resource.prlimit",
                   "sys.remote_exec"}
        refused_prefixes = ("socket.", "ctypes.", "_ctypes.")
        # C modules that reach around the hook: ``_posixsubprocess.fork_exec`` starts processes
        # without an audit event, and a sub-interpreter starts with no hooks at all.
        refused_imports = ("_posixsubprocess", "_ctypes", "_xxsubinterpreters", "_interpreters", "_test")
        path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
                       "os.symlink", "os.truncate", "os.utime", "os.chflags", "os.setxattr", "os.removexattr",
                       "os.mkfifo", "os.mknod"}
        write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
        realpath, isdir, fsdecode, sep = os.path.realpath, os.path.isdir, os.fsdecode, os.sep

        def inside(path, roots):
            real = realpath(fsdecode(path))
            return any(real == root or real.startswith(root + sep) for root in roots)

        def hook(event, args):
            if event == "open":
                path, mode, flags = args
                if isinstance(path, int):  # wraps a descriptor that is already open
                    return
                writing = bool(flags & write_flags) or any(c in (mode or "") for c in "wax+")
                if writing and not inside(path, [here]):
                    raise PermissionError(f"sandbox: writing {path!r} outside the sandbox is not allowed")
                # Reading: the temp dir, and stdlib files (no directories: a directory fd
                # could be used as ``dir_fd`` to write next to it).
                if not writing and not inside(path, [here]) and (not inside(path, readable) or isdir(path)):
                    raise PermissionError(f"sandbox: reading {path!r} is not allowed")
            elif event == "import" and str(args[0]).startswith(refused_imports):
                raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
            elif event in refused or event.startswith(refused_prefixes):
                raise PermissionError(f"sandbox: {event} is not allowed")
            elif event in path_events:
                for i, arg in enumerate(args):
                    if event == "os.symlink" and i == 0:  # the target; reading through it is checked
                        continue
                    if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg, [here]):
                        raise PermissionError(f"sandbox: {event} on {arg!r} outside the sandbox is not allowed")

        # Functions that act on other processes and raise no audit event: remove them (from
        # the C modules too, as ``os``/``signal`` only re-export them).
        import _signal
        import posix

        for module, name in ((os, "pidfd_open"), (posix, "pidfd_open"), (signal, "pidfd_send_signal"),
                             (_signal, "pidfd_send_signal"), (os, "setpriority"), (posix, "setpriority"),
                             (os, "sched_setscheduler"), (posix, "sched_setscheduler"),
                             (os, "sched_setparam"), (posix, "sched_setparam"),
                             (os, "sched_setaffinity"), (posix, "sched_setaffinity")):
            if hasattr(module, name):
                delattr(module, name)
        sys.addaudithook(hook)

    random.seed(0)  # like PYTHONHASHSEED=0: a program that draws random numbers is judged the same every run
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(job["program"], "<program>", "exec"), namespace)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: report, never die
        send({"program_error": describe(exc)})
    else:
        for i, test in enumerate(job["tests"]):  # each test separately: one failure hides nothing
            try:
                exec(compile(test, f"<test {i}>", "exec"), namespace)
                send({"test": i, "passed": True})
            except BaseException as exc:
                send({"test": i, "passed": False, "error": describe(exc)})
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
    send({"done": True})
    exit_now(0)  # skip interpreter shutdown: no atexit handlers or __del__ of the program


@functools.cache
def _runner_source() -> str:
    return inspect.getsource(_runner) + "\n_runner()\n"


# --------------------------------------------------------------------------------------
# The parent.
# --------------------------------------------------------------------------------------
@functools.cache
def _child_user(python: str) -> int | None:
    """``NOBODY`` if we are root and ``python`` starts as nobody (checked once), else None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    probe = [python, "-s", "-S", "-B", "-c", "import json, math, resource"]
    try:
        done = subprocess.run(probe, user=NOBODY, group=NOBODY, extra_groups=[], env={}, cwd="/",
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return NOBODY if done.returncode == 0 else None


def describe_isolation(python: str | None = None) -> dict:
    """Which of the kernel-enforced protections this machine gives (see the module docstring)."""
    python = python or sys.executable
    user = _child_user(python)
    root_parent = hasattr(os, "geteuid") and os.geteuid() == 0
    return {
        "python": python,
        "child_user": "nobody (uid 65534)" if user is not None else "same as ours",
        "os_stops_fork": user is not None or not root_parent,  # RLIMIT_NPROC binds non-root only
        "os_stops_kill_of_parent": user is not None,  # a different, unprivileged uid
        "os_stops_writes_to_our_files": user is not None,
    }


def _limits(timeout: float, memory_mb: int, file_mb: int, cpu_seconds: int | None) -> dict:
    return {
        "RLIMIT_CPU": cpu_seconds if cpu_seconds is not None else math.ceil(timeout) + 1,
        "RLIMIT_AS": memory_mb << 20,
        "RLIMIT_NPROC": 0,
        "RLIMIT_FSIZE": file_mb << 20,
        "RLIMIT_NOFILE": 32,
        "RLIMIT_CORE": 0,
    }


def _check_inputs(program, tests, timeout) -> None:
    if not isinstance(program, str):
        raise TypeError(f"run_tests: program must be a str, got {type(program).__name__}")
    if not isinstance(tests, (list, tuple)):
        raise TypeError(f"run_tests: tests must be a list of str, got {type(tests).__name__}")
    for i, test in enumerate(tests):
        if not isinstance(test, str):
            raise TypeError(f"run_tests: tests[{i}] must be a str, got {type(test).__name__}")
    if not timeout > 0:
        raise ValueError(f"run_tests: timeout must be > 0 seconds, got {timeout!r}")


def _collect(proc, result_fd: int, deadline: float, max_output: int):
    """Read the child's output and results until both close or the deadline passes.

    Keeps at most ``max_output`` bytes of output but drains (and counts) everything, so
    a chatty program never blocks on a full pipe. Returns (output, n_bytes, results, timed_out).
    """
    output, n_bytes, results = bytearray(), 0, bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "output")
        sel.register(result_fd, selectors.EVENT_READ, "results")
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(output), n_bytes, bytes(results), True
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fd)
                elif key.data == "output":
                    n_bytes += len(chunk)
                    output += chunk[: max(0, max_output - len(output))]
                elif len(results) < _MAX_RESULT_BYTES:
                    results += chunk
    try:  # both pipes closed; the child may still be alive (it can close them itself)
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return bytes(output), n_bytes, bytes(results), True
    return bytes(output), n_bytes, bytes(results), False


def _kill(proc) -> None:
    """SIGKILL the child's whole process group (its session), then the child itself."""
    for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # stuck in the kernel (a dead disk): give up waiting, not the run
        pass


def _remove_tree(path: str) -> None:
    """Delete the temp dir, even where the program made its sub-folders unreadable."""
    for root, dirs, _ in os.walk(path, onerror=lambda e: None):
        for name in dirs:
            try:
                os.chmod(os.path.join(root, name), stat.S_IRWXU, follow_symlinks=False)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


def _parse_results(raw: bytes, total: int):
    program_error, done = None, False
    passed: list[bool] = [False] * total
    errors: list[str | None] = ["not run"] * total
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, dict):
            continue
        if "program_error" in message:
            program_error = str(message["program_error"])
        elif message.get("done") is True:
            done = True
        elif isinstance(message.get("test"), int) and 0 <= message["test"] < total:
            i = message["test"]
            passed[i] = message.get("passed") is True
            errors[i] = None if passed[i] else str(message.get("error"))
    return program_error, done, passed, errors


def run_tests(
    program: str,
    tests: list[str],
    timeout: float = 2.0,
    *,
    memory_mb: int = 512,
    file_mb: int = 16,
    cpu_seconds: int | None = None,
    max_output: int = 16_384,
    audit_hook: bool = True,
    python: str | None = None,
) -> SandboxResult:
    """Run ``program`` and then each assert-style test in ``tests`` in a sandboxed child.

    Args:
        program: Python source defining what the tests use (a function, usually).
        tests: statements such as ``"assert add(1, 2) == 3"``; each runs on its own, in
            the program's namespace, so one failure does not hide the others.
        timeout: wall-clock seconds for the whole run, interpreter start included.
        memory_mb: address-space limit (``RLIMIT_AS``) of the child.
        file_mb: the largest file the child may write (``RLIMIT_FSIZE``).
        cpu_seconds: CPU limit; default ``ceil(timeout) + 1`` (the wall clock fires first,
            the CPU limit is the backstop if we are gone).
        max_output: bytes of stdout+stderr kept; the rest is counted, not stored.
        audit_hook: turn off only to see what the OS limits alone stop (the tests do).
        python: the interpreter to run (default ``sys.executable``).

    Returns a :class:`SandboxResult`; never raises because of what the program does.
    """
    _check_inputs(program, tests, timeout)
    python = python or sys.executable
    user = _child_user(python)
    tmp = tempfile.mkdtemp(prefix="dpo_sandbox_")
    result_r, result_w = os.pipe()
    proc = None
    start = time.monotonic()
    try:
        job = {"program": program, "tests": list(tests), "result_fd": result_w, "audit_hook": audit_hook,
               "limits": _limits(timeout, memory_mb, file_mb, cpu_seconds), "user": user}
        with open(os.path.join(tmp, _PAYLOAD), "w", encoding="utf-8") as f:
            json.dump(job, f)
        if user is not None:  # the folder must belong to the child, which drops to this user itself
            os.chown(tmp, user, user)
        proc = subprocess.Popen(
            [python, "-s", "-S", "-B", "-c", _runner_source()],
            cwd=tmp,
            env={"PYTHONHASHSEED": "0", "TMPDIR": tmp},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one stream, in the order the program wrote it
            pass_fds=(result_w,),
            start_new_session=True,
        )
        os.close(result_w)
        result_w = -1
        output, n_bytes, raw, timed_out = _collect(proc, result_r, start + timeout, max_output)
        if timed_out:
            _kill(proc)
    finally:
        for fd in (result_r, result_w):
            if fd >= 0:
                os.close(fd)
        if proc is not None:
            if proc.returncode is None:  # an exception above: never leave a child behind
                _kill(proc)
            proc.stdout.close()
        _remove_tree(tmp)
    seconds = time.monotonic() - start

    program_error, done, passed, errors = _parse_results(raw, len(tests))
    code = proc.returncode
    if done:  # the runner finished: the tests decide
        status, error = ("ok" if all(passed) else "failed"), None
        if program_error is not None:
            status, error = "error", program_error
    elif timed_out:
        status, error = "timeout", f"timed out after {timeout:g} s of wall clock"
    elif code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        status = "timeout" if -code == signal.SIGXCPU else "killed"
        error = "CPU time limit (SIGXCPU)" if status == "timeout" else f"killed by {name}"
    else:
        status, error = "error", program_error or f"the child exited (code {code}) before finishing the tests"
        if code != 0 and program_error is None:
            error += ": " + output.decode("utf-8", "replace")[-300:]
    return SandboxResult(
        status=status, passed=sum(passed), total=len(tests), test_passed=tuple(passed),
        test_errors=tuple(errors), error=error, output=output.decode("utf-8", "replace"),
        output_bytes=n_bytes, truncated=n_bytes > len(output), returncode=code, seconds=seconds, pid=proc.pid,
    )


def run_many(jobs, workers: int = 2, progress: bool = False, **kwargs) -> list[SandboxResult]:
    """Run many ``(program, tests)`` pairs, ``workers`` at a time; results in input order.

    Threads are enough: each one only waits on its child process. ``kwargs`` go to
    :func:`run_tests` (``timeout``, ``memory_mb``, ...).
    """
    jobs = list(jobs)
    for i, job in enumerate(jobs):
        if not (isinstance(job, (tuple, list)) and len(job) == 2):
            raise TypeError(f"run_many: jobs[{i}] must be a (program, tests) pair")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda job: run_tests(job[0], job[1], **kwargs), jobs)
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(jobs), desc="sandbox", mininterval=1.0)
        return list(results)


def measure_throughput(n_programs: int = 32, workers: int = 2, **kwargs) -> float:
    """Programs a second that :func:`run_many` judges: small functions, three tests each.

    Half the programs are right and half have an off-by-one, like sampled code.
    """
    jobs = []
    for i in range(n_programs):
        body = "return sum(xs)" if i % 2 == 0 else "return sum(xs[1:])"
        jobs.append((f"def total(xs):\n    {body}\n",
                     [f"assert total([1, 2, {i}]) == {3 + i}", "assert total([]) == 0", "assert total([5]) == 5"]))
    start = time.perf_counter()
    results = run_many(jobs, workers=workers, **kwargs)
    seconds = time.perf_counter() - start
    expected = ["ok" if i % 2 == 0 else "failed" for i in range(n_programs)]
    if [r.status for r in results] != expected:
        raise RuntimeError(f"measure_throughput: unexpected statuses {[r.status for r in results]}")
    return n_programs / seconds
