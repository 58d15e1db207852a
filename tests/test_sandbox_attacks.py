# ruff: noqa: E501  (the attack table: one program a line reads better than wrapped strings)
"""Hostile programs against dpo_lab.sandbox, seven families, each checked for containment.

For every attack we check, whatever the program printed or claimed:

* nothing outside its temporary folder changed: a canary folder (world-writable, so that
  even ``nobody`` could write there without Landlock) with files whose names, contents,
  modes, owners, times and extended attributes are compared before and after, and a file
  of the interpreter's standard library;
* no process survives the call (this process is a child subreaper: an orphan would become
  our child) and none is left in the child's session;
* the parent is unharmed: alive, a memory canary intact, its priority, affinity and limits
  unchanged, no connection reached its TCP or abstract unix listener;
* no secret (a canary file, an environment variable, ``/etc/shadow``) appears in the output;
* forged verdicts fail: the hidden test's expected value is a random number only we know;
* ``run_tests`` returned, without raising, within its timeout plus a margin (measured without
  the time this process waited for a CPU, from the kernel's schedstat), and its temporary
  folder is gone.

Run by pytest (as root in CI; with the audit hook off; with the child as ``nobody`` through
``/usr/bin/python3`` when that exists), or as a script to measure an environment:

    python tests/test_sandbox_attacks.py [--python /usr/bin/python3] [--no-hook] [--disable landlock]

The script prints attacks tried and contained per family; it needs the standard library only,
and exits with 1 if an attack escaped the full kernel sandbox (so CI can run it as non-root:
``setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 tests/test_sandbox_attacks.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # dpo_lab, as a script too

from dpo_lab.sandbox import SandboxUnavailable, describe_isolation, run_tests  # noqa: E402
from dpo_lab.sandbox_process import wait_for_cleanup  # noqa: E402

TIMEOUT, MARGIN = 1.0, 1.5
SECRET_VALUE = random.SystemRandom().randrange(10**11, 10**12)  # the hidden test's expected value
SECRET_TEXT = "canary-secret-" + hashlib.sha256(str(SECRET_VALUE).encode()).hexdigest()[:12]
MEMORY_CANARY = bytearray(b"DPO-MEMORY-CANARY-" + SECRET_TEXT.encode())
ENV_SECRET = "DPO_SANDBOX_CANARY_TOKEN"

# Helpers every attack program starts with: ``attempt`` prints BREACH when a step that the
# sandbox must refuse succeeds (the harness fails on it), and a libc handle for direct syscalls.
PRELUDE = r'''
import os, sys
print("CWD=" + os.getcwd(), flush=True)
def attempt(what, fn, *args, **kwargs):
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        print("refused", what, type(exc).__name__, str(exc)[:60], flush=True)
        return None
    print("BREACH", what, repr(value)[:80], flush=True)
    return value
def libc():
    import ctypes
    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    return lib
def sys_call(nr, *args):  # a raw syscall: returns -errno on failure, so BREACH means >= 0
    import ctypes
    lib = libc()
    result = lib.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return result
def no_hook():  # try to switch the audit hook off from inside, as an attacker would
    import gc
    for obj in gc.get_objects():
        if callable(obj) and getattr(obj, "__name__", "") == "hook" and getattr(obj, "__closure__", None):
            for cell in obj.__closure__:
                try:
                    if isinstance(cell.cell_contents, (set, frozenset, tuple, list)):
                        cell.cell_contents = type(cell.cell_contents)()
                except Exception:
                    pass
            try:
                obj.__code__ = (lambda event, args: None).__code__
            except Exception:
                pass
'''

X86 = not hasattr(os, "uname") or os.uname().machine == "x86_64"
NR = {"fork": 57, "clone": 56, "kill": 62, "tgkill": 234, "ptrace": 101, "socket": 41, "mknodat": 259,
      "fchmodat": 268, "setpriority": 141, "prlimit64": 302, "rt_sigqueueinfo": 129} if X86 else \
     {"fork": None, "clone": 220, "kill": 129, "tgkill": 131, "ptrace": 117, "socket": 198, "mknodat": 33,
      "fchmodat": 53, "setpriority": 140, "prlimit64": 261, "rt_sigqueueinfo": 138}

# (family, name, program). Tokens: __CANARY__ (folder), __PORT__ (TCP port we listen on),
# __ABSTRACT__ (abstract unix socket name), __STDLIB__ (a standard-library file), NR_x.
ATTACKS = [
    # ---- 1. files outside the temporary folder, without open() or around the hook
    ("files", "open for write", "attempt('write', lambda: open('__CANARY__/precious.txt', 'w').write('x'))"),
    ("files", "open append after hook off", "no_hook()\nattempt('append', lambda: open('__CANARY__/precious.txt', 'a').write('x'))"),
    ("files", "builtins.any rebound", "import builtins\nbuiltins.any = lambda it: False\nbuiltins.isinstance = lambda *a: False\n"
              "attempt('write', lambda: open('__CANARY__/new.txt', 'w').write('x'))"),
    ("files", "dir_fd confusion", "fd = attempt('dirfd', os.open, '__CANARY__', os.O_RDONLY)\n"
              "attempt('create', os.open, 'new.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd if fd else -1)\n"
              "d = os.open('.', os.O_RDONLY)\nattempt('open ../', os.open, '../' * 10 + '__CANARY__/precious.txt'.lstrip('/'), os.O_WRONLY, dir_fd=d)"),
    ("files", "relative dir_fd read of shadow", "d = os.open('.', os.O_RDONLY)\n"
              "attempt('shadow', lambda: os.read(os.open('../' * 12 + 'etc/shadow', os.O_RDONLY, dir_fd=d), 100))"),
    ("files", "unlink", "attempt('unlink', os.unlink, '__CANARY__/precious.txt')"),
    ("files", "unlink after hook off", "no_hook()\nattempt('unlink', os.unlink, '__CANARY__/precious.txt')\n"
              "attempt('rmdir', os.rmdir, '__CANARY__/sub')"),
    ("files", "rename out", "no_hook()\nattempt('rename', os.rename, '__CANARY__/precious.txt', 'stolen')"),
    ("files", "rename in", "no_hook()\nopen('mine', 'w').write('x')\nattempt('rename', os.rename, 'mine', '__CANARY__/precious.txt')"),
    ("files", "hard link", "no_hook()\nif attempt('link', os.link, '__CANARY__/precious.txt', 'l') is None:\n"
              "    attempt('write', lambda: open('l', 'r+').write('x'))"),
    ("files", "symlink then write", "no_hook()\nos.symlink('__CANARY__/precious.txt', 'link')\n"
              "attempt('write', lambda: open('link', 'w').write('x'))"),
    ("files", "chdir out", "no_hook()\ntry:\n    os.chdir('__CANARY__')\nexcept OSError:\n    pass\n"
              "attempt('create', lambda: open('new.txt', 'w'))\nattempt('read', lambda: open('secret.txt').read())"),
    ("files", "truncate", "no_hook()\nattempt('truncate', os.truncate, '__CANARY__/precious.txt', 0)"),
    ("files", "chmod", "no_hook()\nattempt('chmod', os.chmod, '__CANARY__/precious.txt', 0o777)\n"
              "attempt('chmod-dir', os.chmod, '__CANARY__', 0o700)"),
    ("files", "chown", "no_hook()\nattempt('chown', os.chown, '__CANARY__/precious.txt', 0, 0)"),
    ("files", "utime", "no_hook()\nattempt('utime', os.utime, '__CANARY__/precious.txt', (0, 0))"),
    ("files", "setxattr", "no_hook()\nattempt('xattr', os.setxattr, '__CANARY__/precious.txt', 'user.x', b'1')"),
    ("files", "mkfifo", "attempt('fifo', os.mkfifo, '__CANARY__/fifo')"),
    ("files", "mknod", "import stat\nattempt('mknod', os.mknod, '__CANARY__/node', 0o600 | stat.S_IFREG)\n"
              "attempt('mknod-here', os.mknod, 'node', 0o600 | stat.S_IFCHR, os.makedev(1, 3))"),
    ("files", "readline history", "import readline\nattempt('read', readline.read_history_file, '__CANARY__/secret.txt')\n"
              "attempt('write', readline.write_history_file, '__CANARY__/precious.txt')"),
    ("files", "sqlite3", "import sqlite3\nc = attempt('connect', sqlite3.connect, '__CANARY__/db.sqlite')\n"
              "c and attempt('create', c.execute, 'create table t (x)')"),
    ("files", "posixshmem", "import _posixshmem\nattempt('shm', _posixshmem.shm_open, '/dpo_canary_shm', os.O_CREAT | os.O_RDWR, 0o600)"),
    ("files", "spwd", "import spwd\nattempt('spwd', spwd.getspnam, 'root')"),
    ("files", "fchmod on a stdlib fd", "no_hook()\nfd = os.open('__STDLIB__', os.O_RDONLY)\n"
              "attempt('fchmod', os.fchmod, fd, 0o777)\nattempt('fchown', os.fchown, fd, 65534, 65534)\n"
              "attempt('futime', os.utime, fd, (0, 0))\nattempt('fsetxattr', os.setxattr, fd, 'user.x', b'1')"),
    ("files", "write to a stdlib file", "no_hook()\nattempt('write', lambda: open('__STDLIB__', 'a'))"),
    ("files", "raw mknodat/fchmodat syscalls", "attempt('mknodat', sys_call, NR_mknodat, -100, b'__CANARY__/n', 0o10600, 0)\n"
              "attempt('fchmodat', sys_call, NR_fchmodat, -100, b'__CANARY__/precious.txt', 0o777)"),
    ("files", "inode flags ioctl", "import fcntl\nfd = os.open('.', os.O_RDONLY)\n"
              "attempt('setflags', fcntl.ioctl, fd, 0x40086602, b'\\x10\\0\\0\\0\\0\\0\\0\\0')"),
    ("files", "write /tmp and /dev/shm", "no_hook()\nattempt('tmp', lambda: open('/tmp/dpo_canary_escape', 'w'))\n"
              "attempt('shm', lambda: open('/dev/shm/dpo_canary_escape', 'w'))"),
    ("files", "io_uring", "attempt('io_uring', sys_call, 425, 4, bytearray(120))"),
    # ---- 2. secrets
    ("secrets", "read canary", "attempt('read', lambda: print(open('__CANARY__/secret.txt').read()))"),
    ("secrets", "read canary after hook off", "no_hook()\nattempt('read', lambda: print(open('__CANARY__/secret.txt').read()))"),
    ("secrets", "read shadow", "no_hook()\nattempt('shadow', lambda: print(open('/etc/shadow').read()))"),
    ("secrets", "parent environ", "no_hook()\nattempt('environ', lambda: print(open(f'/proc/{os.getppid()}/environ', 'rb').read()))"),
    ("secrets", "parent cmdline and maps", "no_hook()\nattempt('maps', lambda: open(f'/proc/{os.getppid()}/maps').read(100))"),
    ("secrets", "parent memory", "no_hook()\nattempt('mem', lambda: open(f'/proc/{os.getppid()}/mem', 'rb'))"),
    ("secrets", "own environment", "print(dict(os.environ))"),
    ("secrets", "home and ssh", "no_hook()\nattempt('home', os.listdir, '/root')\nattempt('ssh', lambda: open('/root/.ssh/id_rsa').read())"),
    ("secrets", "list canary", "no_hook()\nattempt('list', os.listdir, '__CANARY__')"),
    ("secrets", "scandir via fd", "no_hook()\nfd = attempt('open dir', os.open, '__CANARY__', os.O_RDONLY | os.O_DIRECTORY)\n"
              "fd and attempt('read', lambda: os.read(os.open('secret.txt', os.O_RDONLY, dir_fd=fd), 100))"),
    ("secrets", "process_vm_readv", "attempt('vm_readv', sys_call, 310 if sys.maxsize > 2**32 and os.uname().machine == 'x86_64' else 270, os.getppid(), 0, 0, 0, 0, 0)"),
    # ---- 3. processes that outlive the call
    ("processes", "fork", "attempt('fork', os.fork)"),
    ("processes", "fork after hook off", "no_hook()\npid = attempt('fork', os.fork)\nif pid == 0:\n    import time; time.sleep(30)"),
    ("processes", "os.system after hook off", "no_hook()\nattempt('system', lambda: os.system('sleep 30 &') == 0 or 1 / 0)"),
    ("processes", "subprocess after hook off", "no_hook()\nimport subprocess\n"
              "attempt('popen', subprocess.Popen, ['sleep', '30'], start_new_session=True)"),
    ("processes", "posix_spawn rebuilt posix", "import importlib.util, importlib.machinery\n"
              "spec = importlib.util.find_spec('posix')\nposix = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(posix)\n"
              "attempt('spawn', posix.posix_spawn, '/bin/sleep', ['sleep', '30'], {}, setsid=True)"),
    ("processes", "_posixsubprocess copy", "import shutil, sys, glob\nno_hook()\n"
              "for f in glob.glob(sys.path[-1] + '/_posixsubprocess*'):\n    attempt('copy', shutil.copy2, f, '.')\n"
              "sys.path.insert(0, '.')\nm = __import__('_posixsubprocess')\n"
              "m and attempt('fork_exec', m.fork_exec, [b'/bin/sleep', b'30'], [b'/bin/sleep'], True, (), None, None, -1, -1, -1, -1, -1, -1, -1, -1, True, True, None, None, None, -1, None, False)"),
    ("processes", "setsid then fork", "no_hook()\nattempt('setsid', os.setsid)\nattempt('setpgid', os.setpgid, 0, 0)\n"
              "pid = attempt('fork', os.fork)\nif pid == 0:\n    import time; time.sleep(30)"),
    ("processes", "raw fork/clone syscalls", "r = attempt('clone', sys_call, NR_clone, 17, 0, 0, 0, 0)\nif r == 0:\n    import time; time.sleep(30)\n"
              "if NR_fork:\n    r = attempt('fork', sys_call, NR_fork)\n    if r == 0:\n        import time; time.sleep(30)"),
    ("processes", "clone3", "attempt('clone3', sys_call, 435, bytearray(88), 88)"),
    ("processes", "vfork via ctypes", "lib = libc()\nr = lib.vfork() if hasattr(lib, 'vfork') else -1\nprint('BREACH vfork' if r >= 0 else 'refused vfork')\nif r == 0:\n    lib._exit(0)"),
    ("processes", "pty", "import pty\nno_hook()\nattempt('pty', pty.fork)"),
    ("processes", "thread outliving", "import threading, time\nt = threading.Thread(target=time.sleep, args=(30,))\n"
              "try:\n    t.start()\nexcept BaseException as e:\n    print('refused thread', e)"),
    ("processes", "execv", "no_hook()\nattempt('exec', os.execv, '/bin/sleep', ['sleep', '30'])"),
    ("processes", "multiprocessing", "no_hook()\nimport multiprocessing\nattempt('mp', lambda: multiprocessing.Process(target=print).start())"),
    ("processes", "unshare/mount", "attempt('unshare', sys_call, 272 if os.uname().machine == 'x86_64' else 97, 0x10000000)\n"
              "attempt('mount', sys_call, 165 if os.uname().machine == 'x86_64' else 40, b'none', b'.', b'tmpfs', 0, 0)"),
    # ---- 4. the audit hook, switched off from inside (the kernel must still hold)
    ("audit hook", "closure emptied then system", "no_hook()\nattempt('system', lambda: os.system('touch __CANARY__/pwned') == 0 or 1 / 0)"),
    ("audit hook", "frames and gc", "import gc\nfor o in gc.get_objects():\n    if getattr(o, '__name__', '') == 'inside':\n"
              "        o.__code__ = (lambda *a, **k: True).__code__\n"
              "attempt('write', lambda: open('__CANARY__/new.txt', 'w'))"),
    ("audit hook", "ctypes after hook off", "no_hook()\nlib = libc()\n"
              "lib and attempt('kill', lambda: lib.kill(os.getppid(), 0) == 0 or 1/0)"),
    ("audit hook", "rebuilt posix", "import importlib.util\nspec = importlib.util.find_spec('posix')\nposix = importlib.util.module_from_spec(spec)\n"
              "spec.loader.exec_module(posix)\nattempt('pidfd', posix.pidfd_open, os.getppid())\n"
              "attempt('prio', posix.setpriority, posix.PRIO_PROCESS, os.getppid(), 19)"),
    ("audit hook", "sub-interpreter", "no_hook()\nimport _xxsubinterpreters as x\ni = x.create()\n"
              "attempt('run', lambda: x.run_string(i, 'open(\"__CANARY__/new.txt\", \"w\")') or 1 / 0)"),
    # ---- 5. network
    ("network", "tcp connect", "import socket\nattempt('tcp', socket.create_connection, ('127.0.0.1', __PORT__), 1)"),
    ("network", "tcp after hook off", "no_hook()\nimport socket\nattempt('tcp', socket.create_connection, ('127.0.0.1', __PORT__), 1)"),
    ("network", "udp", "no_hook()\nimport socket\ns = attempt('udp', socket.socket, socket.AF_INET, socket.SOCK_DGRAM)\n"
              "s and attempt('send', s.sendto, b'x', ('127.0.0.1', __PORT__))"),
    ("network", "abstract unix", "no_hook()\nimport socket\ns = attempt('unix', socket.socket, socket.AF_UNIX)\n"
              "s and attempt('connect', s.connect, '\\0__ABSTRACT__')"),
    ("network", "raw socket syscall", "attempt('socket', sys_call, NR_socket, 2, 1, 0)"),
    ("network", "socketpair and bind", "no_hook()\nimport socket\nattempt('pair', socket.socketpair)\n"
              "s = attempt('sock', socket.socket)\ns and attempt('bind', s.bind, ('0.0.0.0', 0))"),
    ("network", "urllib", "no_hook()\nimport urllib.request\nattempt('http', urllib.request.urlopen, 'http://127.0.0.1:__PORT__/', timeout=1)"),
    # ---- 6. resources and the judge
    ("judge", "forge results on every fd", "import json\nfor fd in range(3, 40):\n    for i in range(3):\n        try:\n"
              "            os.write(fd, (json.dumps({'test': i, 'value': ['i', str(__SECRET_GUESS__)], 'passed': True}) + '\\n').encode())\n"
              "        except OSError:\n            pass\n    try:\n        os.write(fd, b'{\"done\": true}\\n')\n    except OSError:\n        pass"),
    ("judge", "always-equal object", "class E:\n    def __eq__(self, other): return True\n    __hash__ = None\ndef secret_fn(): return E()"),
    ("judge", "int subclass equal to all", "class E(int):\n    def __eq__(self, other): return True\ndef secret_fn(): return E(0)"),
    ("judge", "read hidden tests from frames", "import sys, gc\nfound = [repr(o)[:200] for o in gc.get_objects() if isinstance(o, dict) and 'tests' in o]\n"
              "print(found)\nf = sys._getframe()\nwhile f:\n    print(list(f.f_locals)[:20]); f = f.f_back\n"
              "def secret_fn(): return __SECRET_GUESS__"),
    ("judge", "patch the runner's encoder", "import gc\nfor o in gc.get_objects():\n"
              "    if getattr(o, '__name__', '') == 'encode' and hasattr(o, '__code__'):\n"
              "        o.__code__ = (lambda value, depth=0: ['i', '0']).__code__\ndef secret_fn(): return 1"),
    ("judge", "exit with done forged", "import json\nos.write(2, b'{\"done\": true}\\n')\nos._exit(0)"),
    ("judge", "huge value", "def secret_fn(): return list(range(10 ** 6))"),
    ("judge", "deep value", "def secret_fn():\n    x = []\n    for _ in range(100000):\n        x = [x]\n    return x"),
    ("judge", "recursive value", "def secret_fn():\n    x = []\n    x.append(x)\n    return x"),
    ("judge", "flood the result channel", "os.write(2, b'[' * 900000)\nos.write(2, b'x' * (1 << 21))"),
    ("resources", "symlink to / in tmp", "no_hook()\nos.symlink('/', 'root')\nos.symlink('__CANARY__', 'canary')\nos.mkdir('d')\nos.symlink('/', 'd/up')"),
    ("resources", "very deep tree", "no_hook()\nimport time\nstart = time.time()\nn = 0\nwhile time.time() - start < 0.8:\n"
              "    os.mkdir('a')\n    os.chdir('a')\n    n += 1\nprint('depth', n)"),
    ("resources", "read-only folders", "no_hook()\nos.makedirs('x/y/z')\nopen('x/y/z/f', 'w').write('1')\n"
              "attempt('chmod', os.chmod, 'x/y', 0o500)\nattempt('chmod0', os.chmod, 'x', 0)"),
    ("resources", "wide tree until the timeout", "no_hook()\ni = 0\nwhile True:\n    os.mkdir(f'w{i}')\n    i += 1"),
    ("resources", "many files", "no_hook()\nfor i in range(3000):\n    open(f'f{i}', 'w').close()"),
    ("resources", "fd exhaustion", "fds = []\ntry:\n    while True:\n        fds.append(os.open('/dev/null', os.O_RDONLY))\nexcept OSError as e:\n    print('fds', len(fds))"),
    ("resources", "raise limits", "import resource\nno_hook()\nattempt('setrlimit', resource.setrlimit, resource.RLIMIT_AS, (-1, -1))\n"
              "attempt('prlimit64', sys_call, NR_prlimit64, 0, 9, bytearray(16), 0)"),
    ("resources", "setpriority parent", "attempt('prio', sys_call, NR_setpriority, 0, os.getppid(), 19)"),
    ("resources", "affinity parent", "no_hook()\nimport importlib.util\nspec = importlib.util.find_spec('posix')\nposix = importlib.util.module_from_spec(spec)\n"
              "spec.loader.exec_module(posix)\nattempt('affinity', posix.sched_setaffinity, os.getppid(), {0})"),
    ("resources", "fork bomb", "no_hook()\nfor _ in range(50):\n    attempt('fork', os.fork)"),
    ("resources", "memory", "x = bytearray(4 << 30)"),
    ("resources", "big file", "open('big', 'wb').write(b'x' * (64 << 20))"),
    ("resources", "stop itself", "import signal\nos.kill(os.getpid(), signal.SIGSTOP)"),
    ("resources", "close pipes then loop", "for fd in range(0, 10):\n    try: os.close(fd)\n    except OSError: pass\nwhile True: pass"),
    ("resources", "print flood", "while True:\n    print('x' * 1000)"),
    ("resources", "bpf and keyrings", "attempt('bpf', sys_call, 321 if os.uname().machine == 'x86_64' else 280, 0, bytearray(128), 128)\n"
              "attempt('add_key', sys_call, 248 if os.uname().machine == 'x86_64' else 217, b'user', b'x', b'y', 1, -2)"),
    # ---- 7. the parent and pid 1
    ("parent", "kill parent", "import signal\nattempt('kill', os.kill, os.getppid(), signal.SIGKILL)"),
    ("parent", "kill parent after hook off", "no_hook()\nimport signal\nattempt('kill', os.kill, os.getppid(), signal.SIGKILL)\n"
              "attempt('killpg', os.killpg, os.getpgid(os.getppid()), signal.SIGKILL)"),
    ("parent", "kill everyone", "no_hook()\nattempt('kill -1', os.kill, -1, 9)\nattempt('kill 1', os.kill, 1, 0)"),
    ("parent", "raw kill/tgkill/sigqueue", "attempt('kill', sys_call, NR_kill, os.getppid(), 0)\n"
              "attempt('tgkill', sys_call, NR_tgkill, os.getppid(), os.getppid(), 0)\n"
              "attempt('sigqueue', sys_call, NR_rt_sigqueueinfo, os.getppid(), 10, bytearray(128))"),
    ("parent", "pidfd_send_signal", "attempt('pidfd_open', sys_call, 434, os.getppid(), 0)\n"
              "attempt('pidfd_send_signal', sys_call, 424, 0, 9, 0, 0)"),
    ("parent", "ptrace parent", "attempt('ptrace', sys_call, NR_ptrace, 16, os.getppid(), 0, 0)"),
    ("parent", "write parent memory", "no_hook()\nattempt('mem', lambda: open(f'/proc/{os.getppid()}/mem', 'r+b'))"),
    ("parent", "pid 1", "no_hook()\nattempt('kill 1', os.kill, 1, 9)\nattempt('environ 1', lambda: open('/proc/1/environ').read())"),
    ("parent", "signal the group", "no_hook()\nattempt('killpg ppid', os.killpg, os.getpgid(os.getppid()), 0)\n"
              "attempt('kill ppgid', os.kill, -os.getpgid(os.getppid()), 0)"),
]
FAMILIES = ("files", "secrets", "processes", "audit hook", "network", "judge", "resources", "parent")


# ---------------------------------------------------------------- what we check
def _snapshot(paths):
    """Everything about each path that a program could change."""
    state = {}
    for top in paths:
        walk = [top] + ([os.path.join(r, n) for r, ds, fs in os.walk(top) for n in ds + fs] if os.path.isdir(top) else [])
        for path in walk:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                state[path] = None
                continue
            content = None
            if os.path.isfile(path) and not os.path.islink(path):
                try:
                    with open(path, "rb") as f:
                        content = hashlib.sha256(f.read()).hexdigest()
                except OSError as exc:
                    content = str(exc)
            try:
                xattrs = sorted(os.listxattr(path, follow_symlinks=False))
            except OSError:
                xattrs = None
            state[path] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns, content, xattrs)
    return state


def schedstat_wait() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (kernel schedstat); 0 if unknown."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def _set_subreaper() -> bool:
    try:
        import ctypes

        return ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _our_children() -> set[str]:
    """Pids whose parent is this process (e.g. a multiprocessing helper an earlier test started)."""
    out = set()
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat") as f:
                if name.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    out.add(name)
        except OSError:
            continue
    return out


def _survivors(session: int, known: set[str] = frozenset()) -> list[str]:
    """Processes in the child's session, or orphans re-parented to us; they are killed.

    ``known``: our children from before the run (pytest runs other test files in this process
    first, and their multiprocessing helpers are ours, not the attack's).
    """
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or name in known:
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid, sid = int(fields[1]), int(fields[3])
        if sid == session or ppid == os.getpid():
            found.append(f"pid {name} (ppid {ppid}, session {sid}, state {fields[0]})")
            if fields[0] != "Z":
                try:
                    os.kill(int(name), 9)
                except OSError:
                    pass
            try:
                os.waitpid(int(name), os.WNOHANG)
            except ChildProcessError:
                pass
    return found


class Arena:
    """The canary folder, the listeners and the bookkeeping of one batch of attacks."""

    def __init__(self):
        self.canary = tempfile.mkdtemp(prefix="dpo_canary_")
        os.chmod(self.canary, 0o777)  # world-writable: even "nobody" could write here without Landlock
        for name, text, mode in (("secret.txt", SECRET_TEXT, 0o644), ("precious.txt", "precious", 0o666)):
            path = os.path.join(self.canary, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, mode)
        os.mkdir(os.path.join(self.canary, "sub"), 0o777)
        os.chmod(os.path.join(self.canary, "sub"), 0o777)
        with open(os.path.join(self.canary, "sub", "f"), "w") as f:
            f.write("x")
        import sysconfig

        self.stdlib_file = os.path.join(sysconfig.get_paths()["stdlib"], "this.py")
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        self.tcp.setblocking(False)
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.udp.setblocking(False)
        self.abstract = f"dpo_canary_{os.getpid()}_{SECRET_VALUE % 10**6}"
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind("\0" + self.abstract)
        self.unix.listen(8)
        self.unix.setblocking(False)
        os.environ[ENV_SECRET] = SECRET_TEXT
        self.subreaper = _set_subreaper()
        try:
            with open("/etc/shadow") as f:
                self.shadow = f.readline().strip()
        except OSError:
            self.shadow = None
        self.watched = [self.canary, self.stdlib_file, "/tmp/dpo_canary_escape", "/dev/shm/dpo_canary_escape",
                        "/dev/shm/dpo_canary_shm"]
        self.parent_state = self._parent_state()

    def _parent_state(self):
        state = [os.getpriority(os.PRIO_PROCESS, 0)]
        if hasattr(os, "sched_getaffinity"):
            state.append(sorted(os.sched_getaffinity(0)))
        import resource

        state += [resource.getrlimit(getattr(resource, n)) for n in ("RLIMIT_AS", "RLIMIT_NOFILE", "RLIMIT_CPU")]
        return state

    def close(self):
        for s in (self.tcp, self.udp, self.unix):
            s.close()
        os.environ.pop(ENV_SECRET, None)
        import shutil

        shutil.rmtree(self.canary, ignore_errors=True)
        for path in self.watched[2:]:  # what an escaped program may have made
            try:
                os.unlink(path)
            except OSError:
                pass

    def program(self, source: str) -> str:
        source = PRELUDE + "".join(f"NR_{k} = {v}\n" for k, v in NR.items()) + source
        for token, value in (("__CANARY__", self.canary), ("__PORT__", str(self.port)),
                             ("__ABSTRACT__", self.abstract), ("__STDLIB__", self.stdlib_file),
                             ("__SECRET_GUESS__", str(SECRET_VALUE + 1))):
            source = source.replace(token, value)
        return source

    def check(self, source: str, **kwargs) -> list[str]:
        """Run one attack; return the problems found (empty: contained)."""
        problems = []
        before, children_before = _snapshot(self.watched), _our_children()
        tests = [f"assert secret_fn() == {SECRET_VALUE}", "assert True"]
        start, waited = time.monotonic(), schedstat_wait()
        try:
            result = run_tests(self.program(source), tests, timeout=TIMEOUT, **kwargs)
        except SandboxUnavailable:
            raise
        except BaseException as exc:  # noqa: BLE001 - run_tests must never raise because of a program
            return [f"run_tests raised {type(exc).__name__}: {exc}"]
        elapsed = time.monotonic() - start - (schedstat_wait() - waited)
        if elapsed > TIMEOUT + MARGIN:
            problems.append(f"returned after {elapsed:.2f} s (not counting waits for a CPU)")
        after = _snapshot(self.watched)
        changed = [p for p in set(before) | set(after) if before.get(p) != after.get(p)]
        if changed:
            problems.append(f"changed outside the sandbox: {sorted(changed)}")
        survivors = _survivors(result.pid, children_before)
        if survivors:
            problems.append(f"processes survived: {survivors}")
        if self._parent_state() != self.parent_state:
            problems.append(f"the parent's priority/affinity/limits changed: {self._parent_state()}")
        if MEMORY_CANARY != bytearray(b"DPO-MEMORY-CANARY-" + SECRET_TEXT.encode()):
            problems.append("the parent's memory was changed")
        for name, sock in (("tcp", self.tcp), ("unix", self.unix)):
            try:
                conn, _ = sock.accept()
                conn.close()
                problems.append(f"a {name} connection reached the parent")
            except BlockingIOError:
                pass
        try:
            self.udp.recvfrom(100)
            problems.append("a udp datagram reached the parent")
        except BlockingIOError:
            pass
        text = result.output + str(result.error)  # what the child produced (test_errors are the parent's words)
        for secret in (SECRET_TEXT, str(SECRET_VALUE), self.shadow):
            if secret and secret in text:
                problems.append(f"a secret leaked into the output: {secret[:20]}...")
        if "BREACH" in result.output:
            problems.append("steps that must fail succeeded: " +
                            "; ".join(line for line in result.output.splitlines() if "BREACH" in line)[:300])
        if result.test_passed[:1] != (False,):
            problems.append(f"the hidden test was forged to pass: {result}")
        workdir = next((line[4:] for line in result.output.splitlines() if line.startswith("CWD=")), None)
        if not wait_for_cleanup(timeout=600):  # a huge tree is deleted in the background, after the return
            problems.append("the background cleanup failed or took over 10 minutes")
        if workdir and os.path.lexists(workdir):
            problems.append(f"the temporary folder {workdir} was left behind")
        return problems


SLOW = ("very deep tree", "wide tree until the timeout")  # seconds of deleting: the cleanup, not the layers


def run_suite(skip_slow: bool = False, **kwargs) -> dict:
    """Every attack once; returns {family: (tried, contained, [failures])}."""
    arena = Arena()
    try:
        report = {family: [0, 0, []] for family in FAMILIES}
        for family, name, source in ATTACKS:
            if skip_slow and name in SLOW:
                continue
            problems = arena.check(source, **kwargs)
            report[family][0] += 1
            if problems:
                report[family][2].append(f"{name}: {problems}")
            else:
                report[family][1] += 1
        return report
    finally:
        arena.close()


def _format(report: dict) -> str:
    lines = [f"{family:>11}: {c}/{t} contained" for family, (t, c, _) in report.items()]
    lines.append(f"{'all':>11}: {sum(r[1] for r in report.values())}/{sum(r[0] for r in report.values())} contained")
    for family, (_, _, failures) in report.items():
        lines += [f"  NOT CONTAINED [{family}] {f}" for f in failures]
    return "\n".join(lines)


# ---------------------------------------------------------------- pytest
def _require_linux_kernel_layers(python=None):
    import pytest

    if not sys.platform.startswith("linux"):
        pytest.skip(f"the kernel sandbox needs Linux (Landlock, seccomp); this is {sys.platform}")
    info = describe_isolation(python)
    if info["missing"]:
        pytest.skip(f"this kernel lacks {info['missing']}: {info['layers']}")


def _assert_all_contained(report, skip_slow=False):
    failures = [f for _, _, fs in report.values() for f in fs]
    assert not failures, "\n" + _format(report)
    assert sum(r[0] for r in report.values()) == len(ATTACKS) - (len(SLOW) if skip_slow else 0)


def test_every_attack_is_contained():
    _require_linux_kernel_layers()
    _assert_all_contained(run_suite())


def test_every_attack_is_contained_by_the_kernel_alone_without_the_audit_hook():
    _require_linux_kernel_layers()
    _assert_all_contained(run_suite(audit_hook=False, skip_slow=True), skip_slow=True)


def test_every_attack_is_contained_with_the_child_as_nobody():
    import pytest

    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and os.access("/usr/bin/python3", os.X_OK)):
        pytest.skip("needs root and a world-readable /usr/bin/python3 (the child then switches to nobody)")
    info = describe_isolation("/usr/bin/python3")
    if not info["child_user"].startswith("nobody"):
        pytest.skip("/usr/bin/python3 cannot start as nobody here")
    _require_linux_kernel_layers("/usr/bin/python3")
    _assert_all_contained(run_suite(python="/usr/bin/python3", audit_hook=False, skip_slow=True), skip_slow=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=None, help="the child's interpreter (default: this one)")
    parser.add_argument("--no-hook", action="store_true", help="turn the audit hook off")
    parser.add_argument("--disable", default="", help="comma list of layers to turn off, e.g. landlock")
    args = parser.parse_args()
    if args.disable:
        os.environ["DPO_LAB_SANDBOX_DISABLE"] = args.disable
    info = describe_isolation(args.python)
    print(f"uid {os.getuid()}, python {info['python']}, child {info['child_user']}, layers {info['layers']}")
    start = time.monotonic()
    suite = run_suite(python=args.python, audit_hook=not args.no_hook, allow_weak=True)
    print(_format(suite))
    print(f"{len(ATTACKS)} attacks in {time.monotonic() - start:.1f} s")
    escaped = sum(len(r[2]) for r in suite.values())
    sys.exit(1 if escaped and not args.disable and not info["missing"] else 0)  # a CI step can rely on it
