"""The sandbox of notebook 04: normal programs are judged right, hostile ones are contained.

Every hostile program must (1) not harm this test process or its files, (2) end with the
status we predict, and (3) return within its timeout plus a small margin.
"""

import os
import random
import shutil
import sys
import time

import pytest

# the hostile-program suite's helper (tests/ is on sys.path: pytest's default import mode puts it there)
from test_sandbox_attacks import schedstat_wait

from dpo_lab import sandbox
from dpo_lab.sandbox import SandboxResult, describe_isolation, measure_throughput, run_many, run_tests

if not sys.platform.startswith("linux"):
    pytest.skip(f"the sandbox refuses on {sys.platform} unless weak mode is opted in (it needs Landlock and "
                "seccomp); its tests run on Linux", allow_module_level=True)
if describe_isolation()["missing"]:
    pytest.skip(f"this kernel lacks {describe_isolation()['missing']}: run_tests refuses here",
                allow_module_level=True)

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add('a', 'b') == 'ab'"]
MARGIN = 1.5  # seconds past the timeout that a run may take (kill, reap, delete the temp dir)


def children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children, counted by the kernel
    return usage.ru_utime + usage.ru_stime


def judged(program, tests=("assert True",), timeout=2.0, **kwargs) -> SandboxResult:
    """run_tests, checking that it returned in time: the wall clock minus the time this thread
    waited for a CPU on a busy machine (kernel schedstat) stays within timeout + MARGIN, and the
    child used no more CPU than its wall-clock budget (kernel rusage)."""
    start, waited, cpu = time.monotonic(), schedstat_wait(), children_cpu()
    result = run_tests(program, list(tests), timeout=timeout, **kwargs)
    elapsed = time.monotonic() - start - (schedstat_wait() - waited)
    assert elapsed < timeout + MARGIN, elapsed
    assert children_cpu() - cpu < timeout + 0.5  # the child did not run past its deadline
    assert result.pid != os.getpid()  # it ran in a child, not here
    assert result.status in ("ok", "failed", "error", "timeout", "killed")
    return result


def nobody_python():
    """An interpreter whose child switches to nobody (root, and the interpreter readable by all)."""
    candidates = [sys.executable, shutil.which("python3"), "/usr/bin/python3", "/usr/local/bin/python3"]
    for python in candidates:
        if python and os.path.exists(python) and describe_isolation(python)["child_user"].startswith("nobody"):
            return python
    return None


# ---------------------------------------------------------------- normal programs
def test_all_tests_pass():
    result = judged(ADD, ADD_TESTS)
    assert (result.status, result.passed, result.total) == ("ok", 3, 3)
    assert result.test_passed == (True, True, True) and result.test_errors == (None, None, None)
    assert result.pass_rate == 1.0 and result.error is None and result.returncode == 0


def test_some_tests_fail_and_each_is_reported():
    buggy = "def add(a, b):\n    return a - b\n"  # wrong operator: right only when b == 0
    result = judged(buggy, ["assert add(1, 0) == 1", "assert add(1, 2) == 3", "assert add(2, 0) == 2"])
    assert (result.status, result.passed, result.total) == ("failed", 2, 3)
    assert result.test_passed == (True, False, True)
    assert result.test_errors[1].startswith("AssertionError")
    assert result.pass_rate == pytest.approx(2 / 3)


def test_exceptions_in_tests_are_failures_not_crashes():
    result = judged(ADD, ["assert add(1, 2) == 3", "add(1, 'x')", "raise SystemExit(0)", "assert add(0, 0) == 0"])
    assert (result.status, result.passed) == ("failed", 2)
    assert result.test_passed == (True, False, False, True)
    assert result.test_errors[1].startswith("TypeError") and result.test_errors[2].startswith("SystemExit")


def test_syntax_error_in_program():
    result = judged("def add(a, b)\n    return a + b\n", ADD_TESTS)
    assert (result.status, result.passed, result.total) == ("error", 0, 3)
    assert result.error.startswith("SyntaxError")


def test_exception_at_top_level_of_program():
    result = judged("import sys\nsys.exit(3)\n", ADD_TESTS)
    assert (result.status, result.passed) == ("error", 0) and result.error.startswith("SystemExit")


def test_syntax_error_in_one_test_fails_only_that_test():
    result = judged(ADD, ["assert add(1, 2) == 3", "assert add(1,", "assert add(2, 2) == 4"])
    assert result.test_passed == (True, False, True) and result.test_errors[1].startswith("SyntaxError")


def test_output_is_captured_stdout_and_stderr():
    result = judged("import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\n" + ADD, ADD_TESTS)
    assert result.status == "ok"
    assert "to stdout" in result.output and "to stderr" in result.output and not result.truncated


def test_no_tests_and_no_input():
    assert judged(ADD, []).status == "ok"
    result = judged("x = input()")  # stdin is /dev/null
    assert result.status == "error" and result.error.startswith("EOFError")


def test_hash_seed_and_random_are_fixed_so_results_are_deterministic():
    program = "import random\nprint(list({'apple', 'pear', 'plum', 'fig', 'kiwi'}), random.random())"
    assert judged(program).output == judged(program).output
    random.seed(0)
    assert judged(program).output.split()[-1] == repr(random.random())  # the runner's random.seed(0)


def test_bad_arguments_name_the_problem():
    with pytest.raises(TypeError, match=r"tests\[1\]"):
        run_tests(ADD, ["assert True", 3])
    with pytest.raises(TypeError, match="program"):
        run_tests(None, [])
    with pytest.raises(ValueError, match="timeout"):
        run_tests(ADD, [], timeout=0)


# ---------------------------------------------------------------- hostile programs
def test_infinite_loop_times_out_and_earlier_tests_still_count():
    result = judged(ADD, ["assert add(1, 2) == 3", "while True: pass", "assert add(1, 1) == 2"], timeout=2.0)
    assert result.status == "timeout" and "wall clock" in result.error
    assert result.test_passed == (True, False, False) and result.test_errors[2] == "not run"


def test_sleeping_forever_times_out_on_the_wall_clock():
    result = judged("import time\ntime.sleep(1000)", timeout=1.0)
    assert result.status == "timeout"


def test_cpu_limit_is_enforced_by_the_kernel():
    cpu = children_cpu()
    result = judged("while True: pass", timeout=10.0, cpu_seconds=1)  # the CPU limit fires first
    assert result.status == "timeout" and "CPU" in result.error and result.returncode < 0  # SIGXCPU, by the kernel
    assert 0.9 <= children_cpu() - cpu < 2.5  # its one CPU second (kernel accounting is tick-grained), < the hard 2


@pytest.mark.parametrize(
    "program",
    [
        "import os\nos.fork()",
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nos.execv('/bin/true', ['true'])",
        "import os\nos.posix_spawn('/bin/true', ['true'], {})",
        "import _posixsubprocess",  # its fork_exec raises no audit event
        "import _xxsubinterpreters",  # a sub-interpreter would start without the hook
    ],
)
def test_no_child_processes(program):
    result = judged(program)
    assert result.status == "error" and result.error.startswith("PermissionError")


def test_no_pty_child():
    # pty.fork catches the hook's PermissionError from os.forkpty and falls back to openpty,
    # which fails because Landlock hides /dev/ptmx: still an error, and no child
    result = judged("import pty\npty.fork()")
    assert result.status == "error"
    assert result.error == "OSError: out of pty devices" or result.error.startswith("PermissionError")


def test_fork_is_stopped_by_the_kernel_without_the_audit_hook():
    result = judged("import os\nos.fork()", audit_hook=False)  # seccomp: EPERM
    assert result.status == "error" and result.error == "PermissionError: [Errno 1] Operation not permitted"
    result = judged("import ctypes\nprint(ctypes.CDLL(None).fork())", audit_hook=False)  # no Python in between
    assert result.status == "ok" and result.output.strip() == "-1"


def test_fork_is_stopped_by_rlimit_nproc_without_seccomp(monkeypatch):
    python = sys.executable if os.geteuid() != 0 else nobody_python()  # root ignores RLIMIT_NPROC
    if python is None:
        pytest.skip("root, and no interpreter that can run as nobody: RLIMIT_NPROC does not bind root")
    monkeypatch.setenv(sandbox.DISABLE_ENV, "seccomp")
    result = judged("import os\nos.fork()", audit_hook=False, python=python, allow_weak=True)
    assert result.isolation == "weak"
    assert result.status == "error" and result.error.startswith("BlockingIOError")


def test_os_system_is_refused():
    result = judged("import os\nos.system('echo pwned')")
    assert result.status == "error" and "os.system" in result.error and "pwned" not in result.output


def test_huge_allocation_raises_memory_error():
    result = judged("block = bytearray(8 * 1024 ** 3)")
    assert result.status == "error" and result.error.startswith("MemoryError")
    result = judged("block = [0] * 10 ** 9", audit_hook=False, memory_mb=256)  # the OS limit alone
    assert result.status == "error" and result.error.startswith("MemoryError")


def test_memory_error_in_a_test_fails_that_test_only():
    result = judged(ADD, ["assert add(1, 2) == 3", "x = 'a' * 10 ** 10", "assert add(2, 2) == 4"])
    assert result.test_passed == (True, False, True) and result.test_errors[1].startswith("MemoryError")


def test_deep_recursion():
    recurse = "def f(n):\n    return f(n + 1)\n"
    result = judged(recurse, ["f(0)", "assert True"])
    assert result.status == "failed" and result.test_errors[0].startswith("RecursionError")
    # With the limit lifted the interpreter grows frames until memory or time runs out:
    result = judged("import sys\nsys.setrecursionlimit(10 ** 8)\n" + recurse, ["f(0)"], timeout=1.0, memory_mb=128)
    assert result.status in ("failed", "timeout", "killed") and result.passed == 0


def test_writes_outside_the_temp_dir_are_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    programs = [
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('pwned')",
        f"open({str(victim)!r}, 'a').write('pwned')",
        f"import os\nos.open({str(victim)!r}, os.O_WRONLY | os.O_TRUNC)",
        f"import os\nos.remove({str(victim)!r})",
        f"import os\nos.rename({str(victim)!r}, 'mine.txt')",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        f"import os\nos.symlink({str(victim)!r}, 'link')\nopen('link', 'w').write('pwned')",
        f"import os\nos.chdir({str(tmp_path)!r})\nopen('new.txt', 'w')",
    ]
    for program in programs:
        result = judged(program)
        assert result.status == "error" and result.error.startswith("PermissionError"), (program, result)
    assert victim.read_text() == "precious" and sorted(os.listdir(tmp_path)) == ["victim.txt"]


def test_reading_files_outside_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    result = judged(f"print(open({str(secret)!r}).read())")
    assert result.status == "error" and result.error.startswith("PermissionError")
    assert "hunter2" not in result.output


def test_writes_inside_the_temp_dir_work_and_the_dir_is_removed():
    program = ("import os\nopen('notes.txt', 'w').write('hi')\nos.makedirs('sub/deeper')\nos.symlink('/', 'sub/root')\n"
               "try:\n    os.chmod('sub', 0)\nexcept PermissionError:\n    print('chmod refused')\nprint(os.getcwd())")
    result = judged(program, ["assert open('notes.txt').read() == 'hi'"])
    assert result.status == "ok"
    refused, workdir = result.output.split()[-3:-1], result.output.split()[-1]
    assert refused == ["chmod", "refused"]  # seccomp: no mode changes, even inside
    assert os.path.basename(workdir).startswith("dpo_sandbox_") and not os.path.exists(workdir)


def test_unreadable_folders_are_removed_when_chmod_is_allowed(monkeypatch):
    monkeypatch.setenv(sandbox.DISABLE_ENV, "seccomp")  # the weak mode lets the child chmod
    program = ("import os\nos.makedirs('a/b/c')\nopen('a/b/c/f', 'w').write('x')\nos.symlink('/', 'a/b/root')\n"
               "os.chmod('a/b', 0o500)\nos.chmod('a', 0)\nprint(os.getcwd())")
    result = judged(program, allow_weak=True)
    assert result.status == "ok" and not os.path.exists(result.output.strip())


def test_file_size_limit():
    result = judged("open('big.bin', 'wb').write(b'x' * (2 << 20))", file_mb=1)
    assert result.status == "error" and "File too large" in result.error


def test_environment_is_empty(monkeypatch):
    monkeypatch.setenv("DPO_SANDBOX_SECRET", "hunter2")
    result = judged("import os\nprint(dict(os.environ))", ["import os\nassert 'DPO_SANDBOX_SECRET' not in os.environ"])
    assert result.status == "ok" and "hunter2" not in result.output
    assert "'PYTHONHASHSEED': '0'" in result.output  # and nothing of ours: only what the sandbox sets


@pytest.mark.parametrize(
    "program",
    [
        "import socket\nsocket.socket()",
        "import socket\nsocket.create_connection(('127.0.0.1', 80), timeout=1)",
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:1', timeout=1)",
    ],
)
def test_sockets_are_refused(program):
    result = judged(program)
    assert result.status == "error" and "socket" in result.error


def test_ctypes_is_refused():
    result = judged("import ctypes\nctypes.CDLL(None).kill(1, 9)")
    assert result.status == "error" and "ctypes" in result.error


def test_killing_the_parent_does_not_kill_us():
    for program in ["import os\nos.kill(os.getppid(), 9)", "import os\nos.killpg(os.getpgid(os.getppid()), 9)",
                    "import os\nos.kill(0, 9)"]:
        result = judged(program)
        assert result.status == "error" and result.error.startswith("PermissionError")
    # signalling without an audit event: the functions are gone
    for program in ["import os\nos.pidfd_open(os.getppid())", "import signal\nsignal.pidfd_send_signal(0, 9)",
                    "import posix\nposix.pidfd_open(1)", "import os\nos.setpriority(0, os.getppid(), 19)"]:
        result = judged(program)
        assert result.status == "error" and result.error.startswith("AttributeError")
    # the child may kill itself: that is "killed", and still no harm to us
    result = judged("import signal\nsignal.raise_signal(signal.SIGKILL)")
    assert result.status == "killed" and "SIGKILL" in result.error


def test_killing_the_parent_is_stopped_by_the_kernel_without_the_audit_hook():
    result = judged("import os\nos.kill(os.getppid(), 9)", audit_hook=False)  # seccomp, whatever the user
    assert result.status == "error" and result.error == "PermissionError: [Errno 1] Operation not permitted"
    python = nobody_python()
    if python is None:
        pytest.skip("the child runs as our own user here: seccomp and Landlock stop os.kill of the parent")
    result = judged("import os\nos.kill(os.getppid(), 9)", audit_hook=False, python=python)
    assert result.status == "error" and result.error.startswith("PermissionError")
    assert "Operation not permitted" in result.error  # EPERM from the kernel, not the hook's message
    result = judged("import os\nprint(os.getuid())\n" + ADD, ADD_TESTS, python=python)  # and normal code runs
    assert result.status == "ok" and result.output.strip() == "65534"


def test_raising_limits_is_refused():
    result = judged("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))")
    assert result.status == "error" and "resource.setrlimit" in result.error


def test_printing_megabytes_is_capped_and_counted():
    result = judged("for _ in range(100_000):\n    print('x' * 99)", max_output=1000)
    assert result.status == "ok" and result.truncated
    assert len(result.output) == 1000 and result.output_bytes == 10_000_000


def test_exiting_early_is_an_error():
    result = judged(ADD + "import os\nos._exit(0)", ADD_TESTS)
    assert (result.status, result.passed) == ("error", 0) and "before finishing" in result.error


def test_closing_its_pipes_then_looping_still_times_out():
    result = judged("import os\nfor fd in (1, 2, 3, 4, 5, 6):\n    try: os.close(fd)\n    except OSError: pass\n"
                    "while True: pass", timeout=1.0)
    assert result.status == "timeout"


# ---------------------------------------------------------------- many programs
def test_run_many_keeps_order_and_contains_each_program():
    jobs = [(ADD, ADD_TESTS), ("while True: pass", ["assert True"]), ("def add(a, b)", ADD_TESTS),
            ("import os\nos.kill(os.getppid(), 9)", []), (ADD.replace("+", "-"), ADD_TESTS)]
    start = time.monotonic()
    results = run_many(jobs, workers=3, timeout=2.0)
    # the slow one ran beside the others: run one after another, they could not take less
    # wall time than the sum of their own times (a load-independent comparison)
    assert time.monotonic() - start < sum(r.seconds for r in results)
    assert [r.status for r in results] == ["ok", "timeout", "error", "error", "failed"]
    assert [r.passed for r in results] == [3, 0, 0, 0, 0]
    assert len({r.pid for r in results}) == len(jobs)
    with pytest.raises(TypeError, match=r"jobs\[0\]"):
        run_many(["print(1)"])


def test_measure_throughput():
    assert measure_throughput(n_programs=8, workers=2) > 1.0  # programs a second; about 30 on 2 cores
