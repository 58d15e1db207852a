"""The sandbox's layers one by one: the seccomp program, the verdict protocol, refusal, cleanup."""

import os
import struct
import sys

import pytest

from dpo_lab import _sandbox_child as child
from dpo_lab import sandbox, sandbox_process
from dpo_lab.sandbox import SandboxUnavailable, describe_isolation, run_tests

LINUX_WITH_LAYERS = sys.platform.startswith("linux") and not describe_isolation()["missing"]
needs_layers = pytest.mark.skipif(not LINUX_WITH_LAYERS, reason="needs Linux with Landlock, seccomp, no_new_privs")


# ---------------------------------------------------------------- the seccomp program, interpreted
def bpf_run(program, nr, arch, args=(0,) * 6):
    """A classic-BPF interpreter for the few instructions the filter uses, over seccomp_data."""
    args = (tuple(args) + (0,) * 6)[:6]
    data = struct.pack("<iIQ6Q", nr, arch, 0, *[a & (2**64 - 1) for a in args])
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == child.BPF_LD_W_ABS:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == child.BPF_AND_K:
            acc &= k
        elif code == child.BPF_RET_K:
            return k
        elif code in (child.BPF_JEQ_K, child.BPF_JGE_K):
            taken = acc == k if code == child.BPF_JEQ_K else acc >= k
            pc += jt if taken else jf
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")
        pc += 1
        assert pc < len(program), "jumped past the end"


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_seccomp_program_decides_like_the_docstring_says(arch):
    pid = 4242
    prog = child.seccomp_program(arch, pid)
    audit = child.AUDIT_ARCH[arch]
    nr = {name: numbers[0 if arch == "x86_64" else 1] for name, numbers in child._SYSCALLS.items()}
    allow, eperm = child.SECCOMP_RET_ALLOW, child.SECCOMP_RET_ERRNO | child.EPERM
    assert len(prog) < 4096 and all(0 <= jt < 256 and 0 <= jf < 256 for _, jt, jf, _ in prog)
    other = child.AUDIT_ARCH["aarch64" if arch == "x86_64" else "x86_64"]
    assert bpf_run(prog, 0, other) == child.SECCOMP_RET_KILL_PROCESS  # a foreign architecture
    if arch == "x86_64":
        assert bpf_run(prog, 0x40000000 + 1, audit) == child.SECCOMP_RET_KILL_PROCESS  # x32 write
    assert bpf_run(prog, 0, audit) == allow  # read (x86-64) / io_setup: not on the list
    for name in ("execve", "socket", "ptrace", "mount", "unshare", "bpf", "io_uring_setup", "mknodat",
                 "fchmodat", "fchown", "setxattr", "utimensat", "setrlimit", "setpriority", "pidfd_open",
                 "pidfd_send_signal", "sched_setaffinity", "setsid", "reboot", "fchmodat2", "capset"):
        assert bpf_run(prog, nr[name], audit) == eperm, name
    threads = 0x00010000 | 0x00000100 | 0x00000800 | 0x00000400  # CLONE_THREAD|VM|SIGHAND|FILES...
    assert bpf_run(prog, nr["clone"], audit, (threads | 0x00000200,)) == allow
    assert bpf_run(prog, nr["clone"], audit, (17,)) == eperm  # fork: SIGCHLD only
    assert bpf_run(prog, nr["clone"], audit, (threads | 0x10000000,)) == eperm  # a thread in a new user ns
    assert bpf_run(prog, nr["clone3"], audit) == child.SECCOMP_RET_ERRNO | child.ENOSYS
    assert bpf_run(prog, nr["kill"], audit, (pid, 9)) == allow and bpf_run(prog, nr["kill"], audit, (0, 9)) == allow
    for target in (pid + 1, 1, -1, -pid):
        assert bpf_run(prog, nr["kill"], audit, (target, 9)) == eperm, target
        assert bpf_run(prog, nr["tgkill"], audit, (target, target, 9)) == eperm, target
    assert bpf_run(prog, nr["tgkill"], audit, (pid, pid, 9)) == allow
    assert bpf_run(prog, nr["prlimit64"], audit, (0, 7, 0, 1234)) == allow  # getrlimit
    assert bpf_run(prog, nr["prlimit64"], audit, (0, 7, 1234, 0)) == eperm  # setrlimit
    assert bpf_run(prog, nr["prlimit64"], audit, (0, 7, 1 << 40, 0)) == eperm  # high word only
    assert bpf_run(prog, nr["ioctl"], audit, (1, 0x5401)) == allow  # TCGETS (isatty)
    for request in child.BAD_IOCTLS:
        assert bpf_run(prog, nr["ioctl"], audit, (1, request)) == eperm


def test_unknown_architecture_is_refused_clearly(monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("confine() is Linux only")
    monkeypatch.setattr(child.os, "uname", lambda: os.uname_result(("Linux", "h", "6", "v", "riscv64")))
    got = child.confine("/nonexistent", ("landlock", "seccomp"))
    assert "unknown architecture 'riscv64'" in got["landlock"] and "unknown architecture" in got["seccomp"]


def test_confine_on_other_systems_says_why(monkeypatch):
    monkeypatch.setattr(child.sys, "platform", "darwin")
    assert child.confine("/tmp", ("landlock", "seccomp")) == {"landlock": "not on darwin", "seccomp": "not on darwin"}


# ---------------------------------------------------------------- the verdict protocol
def test_asserts_are_split_into_a_call_and_an_expected_value():
    assert sandbox._compile_test("assert f(1, [2]) == (3, 'x')") == ("call", "f(1, [2])", (3, "x"))
    assert sandbox._compile_test("assert -1.5 == g(x=2)") == ("call", "g(x=2)", -1.5)
    assert sandbox._compile_test("assert f(1) == 2, 'message'") == ("call", "f(1)", 2)
    for other in ("assert f(1)", "assert f(1) == g(2)", "assert f(1) != 2", "x = f(1)\nassert x == 2", "assert f(1,"):
        assert sandbox._compile_test(other) == ("exec", other)


def test_decode_rebuilds_plain_data_and_refuses_the_rest():
    value = {"a": [1, 2.5, (True, None)], 3: {b"\x00", "s"}, "c": frozenset({1j})}
    assert sandbox._decode(child.encode(value)) == value
    assert type(sandbox._decode(child.encode((1,)))) is tuple and type(sandbox._decode(child.encode([1]))) is list
    for bad in (["x"], ["i", 3], ["l", "nope"], ["d", [[["l", []], ["n"]]]], "str", [], ["t", [["i", "1"]] * 2, 1]):
        with pytest.raises((ValueError, TypeError)):
            sandbox._decode(bad)
    deep = ["n"]
    for _ in range(100):
        deep = ["l", [deep]]
    with pytest.raises(ValueError):
        sandbox._decode(deep)
    with pytest.raises(TypeError, match="plain data"):
        child.encode(object())


@needs_layers
def test_the_parent_compares_values_with_python_equality():
    program = "def f(x):\n    return {'t': (x, [x]), 'f': x / 2, 's': {x}}\ndef g():\n    return 1.0\n"
    tests = ["assert f(2) == {'t': (2, [2]), 'f': 1.0, 's': {2}}", "assert f(2) == {'t': [2, [2]], 'f': 1.0, 's': {2}}",
             "assert g() == 1", "assert g()", "assert g() == 2"]
    result = run_tests(program, tests)
    assert result.test_passed == (True, False, True, True, False)
    assert result.test_verified == (True, True, True, False, True) and result.unverified == 1
    assert result.pass_rate == pytest.approx(3 / 5) and result.verified_pass_rate == pytest.approx(2 / 5)
    assert result.test_errors[4] == "AssertionError: g() returned 1.0, expected 2"


@needs_layers
def test_an_always_equal_object_cannot_pass_and_the_expected_value_never_reaches_the_child():
    program = ("import gc, sys\nclass E:\n    def __eq__(self, other): return True\n"
               "hidden, ns = str(918273645500 + 1), globals()\n"
               "print(any(hidden in repr(o) for o in gc.get_objects()\n"
               "          if isinstance(o, (dict, list)) and o is not ns))\n"
               "def f(): return E()\n")
    result = run_tests(program, ["assert f() == 918273645501"])
    assert result.status == "failed" and result.output.strip() == "False"
    assert "cannot check" in result.test_errors[0]


# ---------------------------------------------------------------- probe, report, refuse
@needs_layers
def test_without_landlock_run_tests_refuses_and_says_how_to_opt_in(monkeypatch):
    monkeypatch.setenv(sandbox.DISABLE_ENV, "landlock")
    monkeypatch.delenv(sandbox.ALLOW_WEAK_ENV, raising=False)
    info = describe_isolation()
    assert info["mode"] == "refused" and info["missing"] == ["landlock"] and not info["os_stops_reading_our_files"]
    with pytest.raises(SandboxUnavailable, match="landlock") as refusal:
        run_tests("x = 1", ["assert x == 1"])
    assert "allow_weak=True" in str(refusal.value) and sandbox.ALLOW_WEAK_ENV in str(refusal.value)
    result = run_tests("x = 1", ["assert x == 1"], allow_weak=True)
    assert (result.status, result.isolation) == ("ok", "weak")
    monkeypatch.setenv(sandbox.ALLOW_WEAK_ENV, "1")
    assert run_tests("x = 1", ["assert x == 1"]).isolation == "weak" and describe_isolation()["mode"] == "weak"


@needs_layers
def test_describe_isolation_reports_every_layer():
    info = describe_isolation()
    assert info["mode"] == "kernel" and info["missing"] == []
    assert info["layers"]["no_new_privs"] is True and info["layers"]["seccomp"] is True
    assert info["landlock_abi"] >= 1 and info["os_stops_writes_to_our_files"] and info["os_stops_kill_of_parent"]
    assert run_tests("x = 1", []).isolation == "kernel"


def test_unknown_layer_names_are_an_error(monkeypatch):
    monkeypatch.setenv(sandbox.DISABLE_ENV, "landlok")
    with pytest.raises(ValueError, match="landlok"):
        run_tests("x = 1", [])


# ---------------------------------------------------------------- the parent stays in charge
@pytest.mark.skipif(not hasattr(os, "O_DIRECTORY"), reason="needs POSIX directory descriptors and symlinks")
def test_remove_tree_never_follows_links_and_handles_any_depth(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    top = tmp_path / "sandbox"
    top.mkdir()
    (top / "to_outside").symlink_to(outside)
    (top / "to_root").symlink_to("/")
    fd = os.open(top, os.O_RDONLY)
    for _ in range(1100):  # deeper than the recursion limit, its path ("ddd/" * 1100) longer than PATH_MAX
        os.mkdir("ddd", dir_fd=fd)
        new = os.open("ddd", os.O_RDONLY, dir_fd=fd)
        os.symlink(str(outside), "up", dir_fd=new)
        os.close(fd)
        fd = new
    os.close(fd)
    (top / "ro" / "x").mkdir(parents=True)
    (top / "ro" / "x" / "f").write_text("x")
    os.chmod(top / "ro" / "x", 0o500)
    os.chmod(top / "ro", 0)
    sandbox_process.remove_tree(str(top), budget=0.05)  # most of it is left to the background thread
    assert sandbox_process.wait_for_cleanup(timeout=600)
    assert not os.path.lexists(top) and (outside / "keep.txt").read_text() == "keep"
    sandbox_process.remove_tree(str(top))  # gone already: still no exception


@needs_layers
def test_the_process_group_is_killed_after_every_run_not_only_on_timeout(monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("as non-root RLIMIT_NPROC = 0 stops the fork this needs even without seccomp")
    monkeypatch.setenv(sandbox.DISABLE_ENV, "seccomp,landlock")  # weak mode, so the child can fork at all
    program = "import os, time\nif os.fork() == 0:\n    time.sleep(30)\n    os._exit(0)\nprint(os.getpid())"
    result = run_tests(program, [], audit_hook=False, allow_weak=True, timeout=5.0)
    assert result.status == "ok" and result.seconds < 5.0  # it returned when the child finished
    session = result.pid
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        assert int(fields[3]) != session or fields[0] == "Z", f"pid {name} of the child's session survived"


# ---------------------------------------------------------------- what ordinary programs still may do
@needs_layers
@pytest.mark.parametrize("python", [None, "/usr/bin/python3"])
def test_the_standard_library_still_works_inside(python):
    if python is not None and not os.access(python, os.X_OK):
        pytest.skip(f"no {python} here")
    program = ("import collections, decimal, hashlib, heapq, itertools, json, math, re, sqlite3, time, zlib\n"
               "import tempfile\n"
               "def f():\n"
               "    db = sqlite3.connect(':memory:')\n"
               "    with tempfile.NamedTemporaryFile('w+') as t:\n"
               "        t.write('x'); t.flush(); t.seek(0); text = t.read()\n"
               "    return (hashlib.sha256(b'a').hexdigest()[:8], len(zlib.compress(b'aaaa')) > 0, text,\n"
               "            str(decimal.Decimal('1.10') + 1), db.execute('select 2 * 21').fetchone()[0],\n"
               "            time.localtime(0).tm_year > 1900, heapq.nsmallest(1, [3, 1]))\n")
    result = run_tests(program, ["assert f() == ('ca978112', True, 'x', '2.10', 42, True, [1])"], python=python)
    assert result.status == "ok", result


@needs_layers
def test_threads_are_allowed_where_the_rlimit_allows_them():
    if os.geteuid() != 0:
        pytest.skip("as non-root RLIMIT_NPROC = 0 stops threads too (documented)")
    program = ("import threading\nout = []\nt = threading.Thread(target=out.append, args=(41,))\n"
               "t.start(); t.join()\ndef f(): return out[0] + 1\n")  # clone with CLONE_THREAD passes seccomp
    assert run_tests(program, ["assert f() == 42"]).status == "ok"
