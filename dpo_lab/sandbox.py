"""Run untrusted, model-written Python against unit tests, in a child the kernel confines.

In notebook 04 a language model writes programs and unit tests judge them. Those programs
are untrusted: a sampled program may loop forever, allocate all memory, fork, delete files,
read secrets or attack the judge. None of it ever runs in the notebook's kernel.
:func:`run_tests` starts a fresh Python process for every program; the child confines
*itself* (``dpo_lab/_sandbox_child.py``, standard library and ``ctypes`` only) before a line
of the program runs. The layers, outermost first, and honestly what each does and does not stop:

1. **A separate process** (``python -s -S -B``, empty environment but ``PYTHONHASHSEED=0``
   and ``TMPDIR``, stdin ``/dev/null``, a fresh temporary working directory, its own
   session). Stops: crashes and memory blow-ups reaching the notebook; our environment
   variables (tokens) leaking. Does not stop anything the process may do with the OS.
2. **OS resource limits**, hard and soft, set by the child on itself: ``RLIMIT_CPU``
   (SIGXCPU, then SIGKILL: works even if we die), ``RLIMIT_AS`` (``MemoryError`` instead of
   swapping), ``RLIMIT_NPROC = 0`` (non-root only), ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``,
   ``RLIMIT_CORE = 0``. Does not stop: filling the temporary folder with many small files
   until the timeout; using the CPU up to the limit.
3. **Another user**: as root (Colab) with an interpreter everyone can read, the child
   switches to ``nobody`` before confining itself. Stops, by the kernel's ordinary rules,
   signals to our processes and writes to our files. Not available as a non-root user or
   with a Python under ``/root`` (CI's virtual environment): then layer 5 does this work.
4. **no_new_privs and no capabilities**: ``PR_SET_NO_NEW_PRIVS`` (no set-uid or file
   capability can raise the child's rights, and it lets an unprivileged process install
   layers 5 and 6); a child still root drops every capability, so uid 0 no longer
   bypasses file permissions (it still owns root's files: layer 5 covers those).
5. **Landlock** (Linux >= 5.13; the ABI version decides the extras): the child may read
   and write only inside its temporary folder, read (and map) only the interpreter's
   standard library and the system's shared-library folders (``/usr/lib``, ``/lib``...),
   read ``/dev/null``, ``/dev/zero``, ``/dev/urandom`` and ``/etc/localtime``, and
   nothing else, whatever the path trick (``dir_fd``, ``..``, symlinks, ``/proc/<pid>/mem``,
   C modules that open files without an audit event). From ABI 4: no TCP bind or
   connect; from ABI 6: no signals to, and no abstract unix sockets of, processes outside
   the sandbox. Does not stop: reading anything under those library folders (no secrets
   live there), ``os.stat`` of any path (sizes and times stay visible), ``chdir``, listing
   ``/proc``'s pids, or, below ABI 4, UDP (seccomp refuses sockets).
6. **seccomp-BPF**, a deny list written by hand behind an architecture check (x86-64 and
   aarch64; the x32 ABI and foreign architectures kill the process). EPERM for: fork,
   vfork, exec and clone without ``CLONE_THREAD`` (clone3 answers ENOSYS so the C library
   falls back to clone, whose flags a filter can read); every socket call; ptrace,
   process_vm_*, pidfd_*, kcmp; kill/tkill/tgkill/sigqueue except to itself;
   setrlimit/prlimit (reading is allowed), priority, affinity and scheduling, setsid and
   setpgid; mount and namespace calls; io_uring, bpf, perf_event_open, userfaultfd,
   keyrings; mknod; chmod, chown, xattr, utime and inode-flag ioctls (and TIOCSTI);
   module loading, reboot, clock and host-name changes, swap, quotas, open_by_handle_at.
   Does not stop: anything not on the list (threads, memory, files Landlock allows), nor a
   syscall newer than the list (a kernel after 6.17 may add one). Its cost: ``chmod``,
   ``utime`` and xattr calls fail *inside* the temporary folder too (``shutil.copy`` does
   not copy modes there), and a program cannot start threads as a non-root user
   (``RLIMIT_NPROC``).
7. **A Python audit hook** (PEP 578): friendly ``PermissionError`` messages that name the
   rule (``sandbox: os.system is not allowed``) before the kernel's bare EPERM, plus
   ``ctypes`` and sub-interpreters refused. It is *not* a barrier: a program can find and
   disable it; every attack in ``tests/test_sandbox_attacks.py`` is also contained with it off.
8. **The parent stays in charge**: a wall-clock deadline; after *every* run (not only on
   timeout) the child's whole process group is killed before the child is reaped; output
   capped to ``max_output`` bytes (the rest is counted); the temporary folder removed without
   ever following a symlink, however deep the tree or odd its modes, and cleanup never raises
   (a child can make folders faster than some disks delete them: after half a second the
   rest goes to a background thread; :mod:`dpo_lab.sandbox_process` does this process work). Not
   stopped: in weak mode without seccomp, a child
   running as root can make a file immutable (``chattr +i``); then the folder stays, with a
   warning.
9. **The verdict is the parent's**: tests of the shape ``assert <call> == <literal>`` (either
   side) are split in the parent; only the call goes to the child, which sends back what it
   returned as capped JSON of plain data (never pickle); the parent rebuilds the value and
   compares it with the expected one, which never reaches the child. A program cannot
   forge a pass without computing the right value. Any other test (``assert f(x)``, several
   statements) runs in the child and only its word says it passed: such passes are
   counted in :attr:`SandboxResult.unverified`.

**Probe, report, refuse.** :func:`describe_isolation` runs a probe child once per interpreter
and says which layers work. Without Landlock (or seccomp, or no_new_privs), including on
macOS and Windows, :func:`run_tests` refuses with :class:`SandboxUnavailable`, which says what
is missing; ``allow_weak=True`` (or ``DPO_LAB_SANDBOX_ALLOW_WEAK=1`` in the environment, for
notebooks) runs anyway with the layers that work. What that risks: without Landlock, only
the audit hook (which a program can switch off) stands between a hostile program and every
file your user can read or write (measured here: 90 of the 102 attacks of the test suite
contained with seccomp still on, all 12 others reading or changing files); without seccomp
too, also your processes and the network. (``DPO_LAB_SANDBOX_DISABLE=landlock``,
a comma list of layers, turns layers off to measure the weaker modes.)

What this still does not stop, honestly: a kernel bug (Landlock and seccomp are the kernel's
own sandboxing, as used by browsers, but a local privilege escalation through an allowed
syscall would defeat them; use a VM or gVisor for strong models trained against these
tests); CPU, memory and disk use within the limits; timing side channels; a value the child
computes honestly by reading the test *inputs* (the calls) and special-casing them.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from dpo_lab.sandbox_process import spawn_and_collect

NOBODY = 65534  # uid and gid of the "nobody" user on Linux
LAYERS = ("no_new_privs", "capabilities", "landlock", "seccomp")  # what the child applies to itself
REQUIRED = ("no_new_privs", "landlock", "seccomp")  # without these run_tests refuses unless allow_weak
ALLOW_WEAK_ENV = "DPO_LAB_SANDBOX_ALLOW_WEAK"
DISABLE_ENV = "DPO_LAB_SANDBOX_DISABLE"  # comma list of LAYERS (and "user"): to measure weaker modes
_MAX_MESSAGE = 256 << 10  # one value sent back


class SandboxUnavailable(RuntimeError):
    """The kernel layers the sandbox needs are missing here, and weak mode was not asked for."""


@dataclass(frozen=True)
class SandboxResult:
    """What happened to one program.

    ``status`` is one of:

    * ``ok``: the program ran and every test passed;
    * ``failed``: the program ran, some tests failed (a wrong value, an assert or any exception);
    * ``error``: the program itself did not run (syntax error, exception at top level)
      or the child stopped before finishing (``sys.exit`` is caught, ``os._exit`` is not);
    * ``timeout``: the wall clock or the CPU limit ran out;
    * ``killed``: a signal ended it (a segfault, SIGKILL, the CPU hard limit).

    ``test_passed[i]`` says whether test ``i`` passed; tests after a timeout count as
    failed. ``test_verified[i]`` says whether the parent decided it (a call compared with a
    literal here) rather than trusting the child; ``unverified`` counts the passes only the
    child vouches for. ``pid`` is the child's process id: proof the result came from a child.
    ``isolation`` is ``"kernel"`` (all of :data:`REQUIRED`) or ``"weak"`` (opted in).
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
    test_verified: tuple[bool, ...] = ()
    unverified: int = 0
    isolation: str = "kernel"

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def verified_pass_rate(self) -> float:
        """The pass rate counting only passes the parent checked itself."""
        return (self.passed - self.unverified) / self.total if self.total else 0.0


# --------------------------------------------------------------------------------------
# Probing what this machine gives.
# --------------------------------------------------------------------------------------
@functools.cache
def _child_user(python: str) -> int | None:
    """``NOBODY`` if we are root and ``python`` starts as nobody (checked once), else None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    probe = [python, "-s", "-S", "-B", "-c", "import json, math, resource, ctypes"]
    try:
        done = subprocess.run(probe, user=NOBODY, group=NOBODY, extra_groups=[], env={}, cwd="/",
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return NOBODY if done.returncode == 0 else None


def _disabled() -> frozenset:
    names = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    unknown = names - set(LAYERS) - {"user"}
    if unknown:
        raise ValueError(f"{DISABLE_ENV}: unknown layers {sorted(unknown)}; known: {list(LAYERS) + ['user']}")
    return frozenset(names)


def _allow_weak(allow_weak: bool | None) -> bool:
    if allow_weak is not None:
        return bool(allow_weak)
    return os.environ.get(ALLOW_WEAK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def _probe(python: str, disabled: frozenset) -> dict:
    """Run a child that confines itself and reports each layer, then exits (cached)."""
    layers = [name for name in LAYERS if name not in disabled]
    user = None if "user" in disabled else _child_user(python)
    job = {"probe": True, "layers": layers, "require": [], "user": user, "limits": {}, "audit_hook": False,
           "program": "", "tests": [], "max_message": _MAX_MESSAGE}
    got, magic = {}, None
    try:
        raw, *_, code = spawn_and_collect(python, job, user, timeout=30.0, max_output=4096)
        for line in raw.decode("utf-8", "replace").splitlines():
            message = json.loads(line)
            if isinstance(message, dict) and isinstance(message.get("confined"), dict):
                got, magic = message["confined"], message.get("magic")
                break
        else:
            got = {name: f"the probe child exited with code {code}" for name in layers}
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        got = {name: f"the probe child failed: {exc}" for name in layers}
    for name in LAYERS:
        if name in disabled:
            got[name] = f"turned off by {DISABLE_ENV}"
    return {"layers": got, "user": user, "magic": magic if isinstance(magic, str) else None}


def _working(value) -> bool:
    return value is True or (isinstance(value, int) and not isinstance(value, bool) and value > 0)


def describe_isolation(python: str | None = None) -> dict:
    """Which protections a child gets on this machine, layer by layer (see the module docstring).

    ``missing`` lists the required layers that do not work, ``mode`` is ``"kernel"`` when
    none is missing, else ``"refused"`` (or ``"weak"`` when weak mode is opted in).
    """
    python = python or sys.executable
    probe = _probe(python, _disabled())
    layers, user = probe["layers"], probe["user"]
    ok = {name: _working(layers.get(name)) for name in LAYERS}
    abi = layers.get("landlock") if ok["landlock"] else 0
    missing = [name for name in REQUIRED if not ok[name]]
    root_parent = hasattr(os, "geteuid") and os.geteuid() == 0
    return {
        "python": python,
        "platform": f"{sys.platform} {os.uname().machine if hasattr(os, 'uname') else ''}".strip(),
        "mode": "kernel" if not missing else ("weak" if _allow_weak(None) else "refused"),
        "missing": missing,
        "layers": {name: layers.get(name) for name in LAYERS},  # True, an ABI number, or why not
        "landlock_abi": abi,
        "child_user": "nobody (uid 65534)" if user is not None else "same as ours",
        "os_stops_fork": ok["seccomp"] or user is not None or not root_parent,
        "os_stops_kill_of_parent": ok["seccomp"] or abi >= 6 or user is not None,
        "os_stops_writes_to_our_files": ok["landlock"] or user is not None,
        "os_stops_reading_our_files": ok["landlock"],
        "os_stops_network": ok["seccomp"] or abi >= 4,
    }


def _refusal(python: str, info: dict) -> str:
    why = "; ".join(f"{name}: {info['layers'].get(name)}" for name in info["missing"])
    return (f"dpo_lab.sandbox refuses to run untrusted code with {python} on {info['platform']}: the kernel "
            f"layers {', '.join(info['missing'])} are missing ({why}). The sandbox needs Linux with Landlock "
            f"(kernel >= 5.13, 'landlock' in the LSM list), seccomp and no_new_privs. To run anyway with only "
            f"the layers that work (process, OS limits, audit hook, seccomp if present), pass allow_weak=True "
            f"or set {ALLOW_WEAK_ENV}=1. The risk: a hostile program can then read and change every file your "
            f"user can, signal your processes and use the network; the Python audit hook alone can be bypassed.")


# --------------------------------------------------------------------------------------
# Tests: split in the parent into a call (sent) and an expected value (kept).
# --------------------------------------------------------------------------------------
def _compile_test(source: str):
    """``("call", expression, expected)`` for ``assert <expr> == <literal>``, else ``("exec", source)``."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return ("exec", source)  # the child reports the SyntaxError, as for any test
    if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert):
        test = tree.body[0].test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
            for call, literal in ((test.left, test.comparators[0]), (test.comparators[0], test.left)):
                try:
                    expected = ast.literal_eval(literal)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    continue
                return ("call", ast.unparse(call), expected)
    return ("exec", source)


def _decode(obj, depth: int = 0):
    """Rebuild a value from the child's tagged JSON (see ``_sandbox_child.encode``); ValueError if malformed."""
    if depth > 64 or not isinstance(obj, list) or not obj or not isinstance(obj[0], str):
        raise ValueError("malformed value")
    tag, args = obj[0], obj[1:]
    simple = {"n": lambda: None, "b": lambda: bool(args[0]) if isinstance(args[0], bool) else None,
              "i": lambda: int(args[0]) if isinstance(args[0], str) else None,
              "f": lambda: float(args[0]) if isinstance(args[0], str) else None,
              "c": lambda: complex(float(args[0]), float(args[1])) if all(isinstance(a, str) for a in args) else None,
              "s": lambda: args[0] if isinstance(args[0], str) else None,
              "y": lambda: bytes.fromhex(args[0]) if isinstance(args[0], str) else None}
    if tag in simple:
        value = simple[tag]()
        if value is None and tag != "n":
            raise ValueError("malformed value")
        return value
    if tag in ("l", "t", "S", "F", "d") and len(args) == 1 and isinstance(args[0], list):
        if tag == "d":
            pairs = []
            for pair in args[0]:
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise ValueError("malformed value")
                pairs.append((_decode(pair[0], depth + 1), _decode(pair[1], depth + 1)))
            return dict(pairs)
        items = [_decode(item, depth + 1) for item in args[0]]
        return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
    raise ValueError("malformed value")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------------------
# The parent.
# --------------------------------------------------------------------------------------
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


def _verdicts(raw: bytes, compiled: list):
    """The parent's verdict on each test, from the child's messages (first message per test wins)."""
    total = len(compiled)
    program_error, done, confined, stray = None, False, None, []
    passed, verified = [False] * total, [False] * total
    errors: list[str | None] = ["not run"] * total
    seen: set[int] = set()
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            stray.append(line)
            continue
        if not isinstance(message, dict):
            continue
        if confined is None and "confined" in message:
            confined = message["confined"]
        elif "program_error" in message and program_error is None:
            program_error = str(message["program_error"])[:300]
        elif message.get("done") is True:
            done = True
        elif isinstance(message.get("test"), int) and 0 <= message["test"] < total and message["test"] not in seen:
            i = message["test"]
            seen.add(i)
            kind = compiled[i][0]
            if "error" in message:
                errors[i] = str(message["error"])[:300]
            elif kind == "call" and "value" in message:
                try:
                    value = _decode(message["value"])
                    passed[i] = bool(value == compiled[i][2])
                except (ValueError, TypeError, OverflowError, RecursionError, MemoryError):
                    errors[i] = "ValueError: the value sent back could not be read"
                    continue
                verified[i] = True
                errors[i] = None if passed[i] else \
                    f"AssertionError: {compiled[i][1]} returned {_short(value)}, expected {_short(compiled[i][2])}"
            elif kind == "exec" and message.get("passed") is True:
                passed[i], errors[i] = True, None
            else:
                errors[i] = "the child sent a message the judge does not accept"
    for i, (kind, *_) in enumerate(compiled):
        if kind == "call" and errors[i] is not None and errors[i] != "not run":
            verified[i] = True  # a failure is a failure, whoever reports it
    return program_error, done, confined, passed, errors, verified, stray


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
    allow_weak: bool | None = None,
    python: str | None = None,
) -> SandboxResult:
    """Run ``program`` and then each assert-style test in ``tests`` in a confined child.

    Args:
        program: Python source defining what the tests use (a function, usually).
        tests: statements such as ``"assert add(1, 2) == 3"``; each runs on its own, in
            the program's namespace, so one failure does not hide the others. Those of the
            shape ``assert <call> == <literal>`` are judged here, in the parent.
        timeout: wall-clock seconds for the whole run, interpreter start included.
        memory_mb: address-space limit (``RLIMIT_AS``) of the child.
        file_mb: the largest file the child may write (``RLIMIT_FSIZE``).
        cpu_seconds: CPU limit; default ``ceil(timeout) + 1`` (the wall clock fires first,
            the CPU limit is the backstop if we are gone).
        max_output: bytes of stdout+stderr kept; the rest is counted, not stored.
        audit_hook: turn off to see what the kernel layers alone stop (the tests do).
        allow_weak: run even where Landlock, seccomp or no_new_privs is missing (default: the
            ``DPO_LAB_SANDBOX_ALLOW_WEAK`` environment variable, else refuse).
        python: the interpreter to run (default ``sys.executable``).

    Returns a :class:`SandboxResult`; never raises because of what the program does.
    Raises :class:`SandboxUnavailable` when the kernel layers are missing and weak mode
    was not asked for.
    """
    _check_inputs(program, tests, timeout)
    python = python or sys.executable
    disabled = _disabled()
    probe = _probe(python, disabled)
    working = [name for name in LAYERS if _working(probe["layers"].get(name))]
    missing = [name for name in REQUIRED if name not in working]
    if missing and not _allow_weak(allow_weak):
        info = describe_isolation(python)
        raise SandboxUnavailable(_refusal(python, info))
    compiled = [_compile_test(t) for t in tests]
    job = {"program": program, "probe": False, "audit_hook": audit_hook, "user": probe["user"],
           "tests": [{"call": c[1]} if c[0] == "call" else {"source": c[1]} for c in compiled],
           "limits": _limits(timeout, memory_mb, file_mb, cpu_seconds), "max_message": _MAX_MESSAGE,
           "layers": [name for name in LAYERS if name not in disabled], "require": working}
    raw, output, n_bytes, timed_out, pid, seconds, code = spawn_and_collect(
        python, job, probe["user"], timeout, max_output, probe["magic"])

    program_error, done, confined, passed, errors, verified, stray = _verdicts(raw, compiled)
    if confined is not None and code == 3 and not done:  # the child refused: a layer failed this time
        lost = [name for name in working if not _working(confined.get(name))]
        if lost:
            raise SandboxUnavailable(f"dpo_lab.sandbox: the child could not apply {lost} "
                                     f"({ {n: confined.get(n) for n in lost} }) although the probe could")
    if done:  # the runner finished: the tests decide
        status, error = ("ok" if all(passed) else "failed"), None
        if program_error is not None:
            status, error = "error", program_error
    elif timed_out:
        status, error = "timeout", f"timed out after {timeout:g} s of wall clock"
    elif code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        status = "timeout" if name == "SIGXCPU" else "killed"
        error = "CPU time limit (SIGXCPU)" if status == "timeout" else f"killed by {name}"
    else:
        status, error = "error", program_error or f"the child exited (code {code}) before finishing the tests"
        if code != 0 and program_error is None:
            error += ": " + ("\n".join(stray) or output.decode("utf-8", "replace"))[-300:]
    return SandboxResult(
        status=status, passed=sum(passed), total=len(tests), test_passed=tuple(passed),
        test_errors=tuple(errors), error=error, output=output.decode("utf-8", "replace"),
        output_bytes=n_bytes, truncated=n_bytes > len(output), returncode=code, seconds=seconds, pid=pid,
        test_verified=tuple(verified), unverified=sum(p and not v for p, v in zip(passed, verified)),
        isolation="weak" if missing else "kernel",
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
            from dpo_lab.progress import progress as progress_bar

            results = progress_bar(results, "sandbox", total=len(jobs))
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
