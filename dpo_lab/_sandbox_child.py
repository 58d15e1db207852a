"""The sandbox's child process: confine itself with the kernel, then run the untrusted program.

:mod:`dpo_lab.sandbox` sends this file's source to ``python -s -S -B -c``, so it uses the
standard library only and imports nothing platform-specific at module level (the parent
imports it on macOS and Windows too, to read its constants). Read it in this order:

1. :func:`main` reads the job, sets the OS limits, gives up root where it can, then calls
   :func:`confine` *before* a line of the program runs;
2. :func:`confine` stacks the kernel layers, each with ``ctypes`` (no ``os.unshare`` or
   seccomp module in Python 3.11's standard library):

   * ``no_new_privs`` (``prctl(PR_SET_NO_NEW_PRIVS)``): no set-uid binary or file
     capability can ever give this process, or anything it becomes, more rights;
   * ``capabilities``: a child still running as root drops every capability (bounding,
     ambient, effective, permitted), so uid 0 no longer bypasses file permissions;
   * ``landlock`` (Linux >= 5.13): the file system becomes read-write in the run's temporary
     folder, read-only where the interpreter, its standard library and the system's shared
     libraries live, and invisible everywhere else, whatever path tricks (``dir_fd``,
     symlinks, ``/proc/<pid>/...``) the program uses; from ABI 4 no TCP bind/connect,
     from ABI 6 no signals to, and no abstract unix sockets of, processes outside the sandbox;
   * ``seccomp``: a BPF filter written by hand (:func:`seccomp_program`) that returns
     EPERM for process creation and exec, sockets, ptrace and pidfds, signals to any
     process but itself, rlimit/priority/affinity changes, mount and namespace calls,
     io_uring, bpf, mknod, chmod/chown/xattr/times and inode-flag changes, keyrings,
     module loading, reboot and clock setting; it kills the process for a foreign
     architecture or the x32 ABI;

3. :func:`encode` turns the values the tests compute into JSON the parent can check.

The parent, not this file, decides whether a test passed: see ``dpo_lab/sandbox.py``.
"""

import json
import os
import sys

# ---- constants of the kernel's user-space API (include/uapi/linux/*.h) ------------------
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # audit.h: AUDIT_ARCH_X86_64 / _AARCH64
X32_SYSCALL_BIT = 0x40000000  # x86-64: syscalls of the x32 ABI carry this bit
# Syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl; include/uapi/asm-generic/unistd.h
# for aarch64). None: the call does not exist there. Numbers from 424 on are the same everywhere.
_SYSCALLS = {  # name: (x86_64, aarch64)
    "fork": (57, None), "vfork": (58, None), "clone": (56, 220), "execve": (59, 221), "execveat": (322, 281),
    "socket": (41, 198), "socketpair": (53, 199), "connect": (42, 203), "bind": (49, 200), "listen": (50, 201),
    "accept": (43, 202), "accept4": (288, 242),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271), "kcmp": (312, 272),
    "kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131), "rt_sigqueueinfo": (129, 138),
    "rt_tgsigqueueinfo": (297, 240),
    "setrlimit": (160, 164), "prlimit64": (302, 261), "setpriority": (141, 140), "sched_setaffinity": (203, 122),
    "sched_setscheduler": (144, 119), "sched_setparam": (142, 118), "sched_setattr": (314, 274),
    "ioprio_set": (251, 30), "setsid": (112, 157), "setpgid": (109, 154),
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41), "chroot": (161, 51), "unshare": (272, 97),
    "setns": (308, 268), "migrate_pages": (256, 238), "move_pages": (279, 239),
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "mknod": (133, None), "mknodat": (259, 33),
    "chmod": (90, None), "fchmod": (91, 52), "fchmodat": (268, 53),
    "chown": (92, None), "fchown": (93, 55), "lchown": (94, None), "fchownat": (260, 54),
    "setxattr": (188, 5), "lsetxattr": (189, 6), "fsetxattr": (190, 7),
    "removexattr": (197, 14), "lremovexattr": (198, 15), "fremovexattr": (199, 16),
    "utime": (132, None), "utimes": (235, None), "utimensat": (280, 88), "futimesat": (261, None),
    "ioctl": (16, 29),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294), "init_module": (175, 105),
    "finit_module": (313, 273), "delete_module": (176, 106), "reboot": (169, 142), "swapon": (167, 224),
    "swapoff": (168, 225), "acct": (163, 89), "settimeofday": (164, 170), "clock_settime": (227, 112),
    "clock_adjtime": (305, 266), "adjtimex": (159, 171), "sethostname": (170, 161), "setdomainname": (171, 162),
    "iopl": (172, None), "ioperm": (173, None), "quotactl": (179, 60), "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264), "syslog": (103, 116), "vhangup": (153, 58), "uselib": (134, None),
    "fanotify_init": (300, 262), "lookup_dcookie": (212, 18),
    # the unified numbers (424 and up)
    "pidfd_send_signal": (424, 424), "io_uring_setup": (425, 425), "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427), "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430),
    "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433), "pidfd_open": (434, 434),
    "clone3": (435, 435), "pidfd_getfd": (438, 438), "process_madvise": (440, 440),
    "mount_setattr": (442, 442), "quotactl_fd": (443, 443), "process_mrelease": (448, 448),
    "fchmodat2": (452, 452), "lsm_set_self_attr": (460, 460), "setxattrat": (463, 463),
    "removexattrat": (466, 466), "open_tree_attr": (467, 467), "file_getattr": (468, 468),
    "file_setattr": (469, 469),
    "landlock_create_ruleset": (444, 444), "landlock_add_rule": (445, 445), "landlock_restrict_self": (446, 446),
    "capset": (126, 91),
}
# Refused outright (EPERM). clone, clone3, kill & co., ioctl and prlimit64 get argument checks below.
DENIED = (
    "fork", "vfork", "execve", "execveat",  # no new programs, no new processes
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",  # no network, no unix sockets
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_open", "pidfd_send_signal", "pidfd_getfd",
    "process_madvise", "process_mrelease", "migrate_pages", "move_pages",  # nothing done to other processes
    "setrlimit", "setpriority", "sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr",
    "ioprio_set", "setsid", "setpgid",  # limits, priorities and the process group stay as the parent set them
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "open_tree_attr",  # mounts and namespaces
    "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open", "userfaultfd",
    "keyctl", "add_key", "request_key",
    "mknod", "mknodat",  # no device files or fifos
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",  # no metadata changes
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "setxattrat",
    "removexattrat", "utime", "utimes", "utimensat", "futimesat", "file_getattr", "file_setattr",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
    "swapoff", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname",
    "setdomainname", "iopl", "ioperm", "quotactl", "quotactl_fd", "open_by_handle_at", "name_to_handle_at",
    "syslog", "vhangup", "uselib", "fanotify_init", "lookup_dcookie", "lsm_set_self_attr", "capset",
)
CLONE_THREAD = 0x00010000
CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x80
# ioctl requests refused: inode flags (immutable, append-only), fsxattr, and typing into a terminal
BAD_IOCTLS = (0x40086602, 0x40046602, 0x401C5820, 0x5412, 0x541C)  # FS_IOC[32]_SETFLAGS, FS_IOC_FSSETXATTR,
#                                                                     TIOCSTI, TIOCLINUX
# seccomp.h / filter.h
SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x80000000, 0x7FFF0000, 0x00050000
EPERM, ENOSYS = 1, 38
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_AND_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x54, 0x06
PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 39, 22, 2
PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
# landlock.h
LANDLOCK_CREATE_RULESET_VERSION, LANDLOCK_RULE_PATH_BENEATH = 1, 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_TRUNCATE, FS_IOCTL_DEV = 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
LIBRARY_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache", "/etc/localtime")


def seccomp_program(arch: str, own_pid: int) -> list:
    """The BPF filter as (code, jt, jf, k) tuples: a deny list behind an architecture check.

    A filter sees ``struct seccomp_data``: ``nr`` at offset 0, ``arch`` at 4, ``args[i]`` at
    16 + 8 i (little-endian: the low 32 bits first). Jumps count instructions to skip.
    """
    nr = {name: numbers[0 if arch == "x86_64" else 1] for name, numbers in _SYSCALLS.items()}
    allow, refuse = SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM

    def ret(value):
        return (BPF_RET_K, 0, 0, value)

    def low(arg):  # load the low 32 bits of args[arg]
        return (BPF_LD_W_ABS, 0, 0, 16 + 8 * arg)

    def guarded(name, block):  # run ``block`` (which always returns) only for syscall ``name``
        return [(BPF_JEQ_K, 0, len(block), nr[name])] + block if nr[name] is not None else []

    def allow_if_arg_in(name, arg, values):  # allow when the low word of args[arg] is one of values
        checks = [(BPF_JEQ_K, len(values) - i, 0, v) for i, v in enumerate(values)]
        return guarded(name, [low(arg)] + checks + [ret(refuse), ret(allow)])

    program = [
        (BPF_LD_W_ABS, 0, 0, 4), (BPF_JEQ_K, 1, 0, AUDIT_ARCH[arch]), ret(SECCOMP_RET_KILL_PROCESS),
        (BPF_LD_W_ABS, 0, 0, 0),
    ]
    if arch == "x86_64":  # the x32 ABI shares the arch value: refuse its numbers outright
        program += [(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT), ret(SECCOMP_RET_KILL_PROCESS)]
    # clone only for threads (CLONE_THREAD, no namespace flags); clone3 says "not implemented",
    # so the C library falls back to clone, which this filter can read
    program += guarded("clone", [low(0), (BPF_AND_K, 0, 0, CLONE_THREAD | CLONE_NAMESPACES),
                                 (BPF_JEQ_K, 1, 0, CLONE_THREAD), ret(refuse), ret(allow)])
    program += guarded("clone3", [ret(SECCOMP_RET_ERRNO | ENOSYS)])
    # signals: only to itself (kill(0) is its own process group: it leads its own session)
    program += allow_if_arg_in("kill", 0, [own_pid, 0])
    for name in ("tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        program += allow_if_arg_in(name, 0, [own_pid])
    # prlimit64 reads limits (the C library's getrlimit uses it) but may not set any
    program += guarded("prlimit64", [(BPF_LD_W_ABS, 0, 0, 32), (BPF_JEQ_K, 0, 3, 0), (BPF_LD_W_ABS, 0, 0, 36),
                                     (BPF_JEQ_K, 0, 1, 0), ret(allow), ret(refuse)])
    checks = [(BPF_JEQ_K, len(BAD_IOCTLS) - i, 0, v) for i, v in enumerate(BAD_IOCTLS)]
    program += guarded("ioctl", [low(1)] + checks + [ret(allow), ret(refuse)])
    for name in DENIED:
        if nr[name] is not None:
            program += [(BPF_JEQ_K, 0, 1, nr[name]), ret(refuse)]
    return program + [ret(allow)]


def confine(workdir: str, layers: tuple) -> dict:
    """Apply the kernel layers named in ``layers`` to this process; return what each achieved.

    Every layer reports ``True``/an ABI number, or a string saying why it is missing. Nothing
    here raises: :func:`main` decides, from the job's ``require`` list, whether to go on.
    """
    got = {}
    if not sys.platform.startswith("linux"):
        return {name: f"not on {sys.platform}" for name in layers}
    arch = os.uname().machine
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
    except (OSError, ImportError, AttributeError) as exc:
        return {name: f"ctypes unavailable: {exc}" for name in layers}
    c_ulong, c_long = ctypes.c_ulong, ctypes.c_long

    def prctl(*args):
        return libc.prctl(*(c_ulong(a) for a in args))

    def error():
        return os.strerror(ctypes.get_errno())

    if "no_new_privs" in layers:
        ok = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 and prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1
        got["no_new_privs"] = True if ok else f"prctl: {error()}"

    if "capabilities" in layers:
        if os.geteuid() != 0:
            got["capabilities"] = "not root: none to drop"
        else:
            cap = 0
            while prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:  # EINVAL past the last capability
                cap += 1
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)

            class Header(ctypes.Structure):
                _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

            class Data(ctypes.Structure):
                _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                            ("inheritable", ctypes.c_uint32)]

            header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3, all zero
            ok = libc.capset(ctypes.byref(header), data) == 0
            got["capabilities"] = True if ok and cap > 0 else f"capset: {error()}"

    if "landlock" in layers:
        got["landlock"] = _landlock(ctypes, libc, workdir)

    if "seccomp" in layers:
        if arch not in AUDIT_ARCH:
            got["seccomp"] = f"unknown architecture {arch!r}: no syscall table"
        else:
            code = seccomp_program(arch, os.getpid())

            class SockFilter(ctypes.Structure):
                _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                            ("k", ctypes.c_uint32)]

            class SockFprog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

            filters = (SockFilter * len(code))(*(SockFilter(*insn) for insn in code))
            prog = SockFprog(len(code), filters)
            ok = libc.prctl(c_long(PR_SET_SECCOMP), c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(prog),
                            c_ulong(0), c_ulong(0)) == 0
            got["seccomp"] = True if ok else f"prctl(PR_SET_SECCOMP): {error()}"
    return got


def _landlock(ctypes, libc, workdir):
    """Landlock: read-write in ``workdir``, read-only for the interpreter and shared libraries."""
    if os.uname().machine not in AUDIT_ARCH:
        return f"unknown architecture {os.uname().machine!r}"
    create, add_rule, restrict = (_SYSCALLS[n][0] for n in ("landlock_create_ruleset", "landlock_add_rule",
                                                             "landlock_restrict_self"))
    syscall, c_long = libc.syscall, ctypes.c_long
    abi = syscall(c_long(create), None, c_long(0), c_long(LANDLOCK_CREATE_RULESET_VERSION))
    if abi < 1:
        return f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())} (kernel without Landlock)"
    handled = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    handled |= (1 << 13) if abi >= 2 else 0  # REFER
    handled |= FS_TRUNCATE if abi >= 3 else 0
    handled |= FS_IOCTL_DEV if abi >= 5 else 0

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1  # __attribute__((packed)) in landlock.h: 12 bytes
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    attr = RulesetAttr(handled, (NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0,
                       (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8  # the struct grew with the ABI
    ruleset = syscall(c_long(create), ctypes.byref(attr), c_long(size), c_long(0))
    if ruleset < 0:
        return f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}"
    file_rights = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
    read_only = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
    rules = [(workdir, handled), ("/dev/null", FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE),
             ("/dev/zero", FS_READ_FILE), ("/dev/urandom", FS_READ_FILE), ("/dev/random", FS_READ_FILE)]
    stdlib = [p for p in sys.path if p] + [os.path.join(sys.base_prefix, "lib")]
    rules += [(path, read_only) for path in list(LIBRARY_DIRS) + stdlib]
    try:
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # not on this machine (python311.zip, /lib64 ...)
            try:
                if not os.path.isdir(path):
                    rights &= file_rights
                rule = PathBeneath(rights & handled, fd)
                if syscall(c_long(add_rule), c_long(ruleset), c_long(LANDLOCK_RULE_PATH_BENEATH),
                           ctypes.byref(rule), c_long(0)) != 0:
                    return f"landlock_add_rule({path}): {os.strerror(ctypes.get_errno())}"
            finally:
                os.close(fd)
        if syscall(c_long(restrict), c_long(ruleset), c_long(0)) != 0:
            return f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}"
    finally:
        os.close(ruleset)
    return abi


# ---- values back to the parent -----------------------------------------------------------
def encode(value, depth=0):
    """A tagged JSON form of plain data (the parent rebuilds it exactly; never pickle)."""
    if depth > 64:
        raise ValueError("nested too deeply")
    if value is None:
        return ["n"]
    if isinstance(value, bool):
        return ["b", bool(value)]
    if isinstance(value, int):
        return ["i", int.__repr__(int(value))]
    if isinstance(value, float):
        return ["f", float.__repr__(float(value))]
    if isinstance(value, complex):
        return ["c", float.__repr__(value.real), float.__repr__(value.imag)]
    if isinstance(value, str):
        return ["s", str.__str__(value)]
    if isinstance(value, (bytes, bytearray)):
        return ["y", bytes(value).hex()]
    if isinstance(value, tuple):
        return ["t", [encode(v, depth + 1) for v in value]]
    if isinstance(value, list):
        return ["l", [encode(v, depth + 1) for v in value]]
    if isinstance(value, dict):
        return ["d", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]]
    if isinstance(value, (set, frozenset)):
        return ["F" if isinstance(value, frozenset) else "S", [encode(v, depth + 1) for v in value]]
    raise TypeError(f"returned a {type(value).__name__}, which the judge cannot check (plain data only)")


# ---- the runner -------------------------------------------------------------------------
def main():  # pragma: no cover - runs in the child process
    import random

    sys.path[:] = [p for p in sys.path if p]  # ``-c`` puts the cwd first; import only the stdlib
    sys.dont_write_bytecode = True
    with open("_payload.json") as f:
        job = json.load(f)
    os.remove("_payload.json")  # nothing of the job stays on disk for the program
    # The result channel is fd 2 as the parent opened it; the program's stderr joins its stdout.
    fd = os.dup(2)
    os.dup2(1, 2)
    write, exit_now, dumps, max_message = os.write, os._exit, json.dumps, job["max_message"]

    def send(message):
        line = dumps(message)
        if len(line) > max_message:
            line = dumps({"test": message.get("test"), "error": "ValueError: result too large to check"})
        write(fd, (line + "\n").encode())

    def describe(exc):
        try:
            return f"{type(exc).__name__}: {exc}"[:300]
        except BaseException:  # a hostile __str__
            return type(exc).__name__

    if sys.platform != "win32":
        import resource
        import signal

        for name, value in job["limits"].items():  # hard limits too: with seccomp it cannot raise them
            if hasattr(resource, name):
                hard = value + 1 if name == "RLIMIT_CPU" else value  # SIGXCPU at soft, SIGKILL at hard
                try:
                    resource.setrlimit(getattr(resource, name), (value, hard))
                except (ValueError, OSError):  # macOS refuses some (RLIMIT_AS); the parent knows
                    pass
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too-big writes fail with EFBIG, not a kill
    if job["user"] is not None:  # give up root; from here the kernel refuses what "nobody" may not do
        os.setgroups([])
        os.setgid(job["user"])
        os.setuid(job["user"])
    confined = confine(os.path.realpath(os.getcwd()), tuple(job["layers"]))
    try:  # the bytecode version: when it is the parent's, the parent sends this file compiled
        magic = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER.hex()
    except (KeyError, AttributeError):
        magic = None
    send({"confined": confined, "magic": magic})
    missing = [name for name in job["require"] if confined.get(name) in (None, False) or
               isinstance(confined.get(name), str)]
    if missing or job["probe"]:
        exit_now(3 if missing else 0)  # never run untrusted code with a required layer missing

    if job["audit_hook"]:
        _install_audit_hook()

    random.seed(0)  # like PYTHONHASHSEED=0: a program that draws random numbers is judged the same every run
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(job["program"], "<program>", "exec"), namespace)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: report, never die
        send({"program_error": describe(exc)})
    else:
        for i, test in enumerate(job["tests"]):  # each test separately: one failure hides nothing
            try:
                if "call" in test:  # the parent holds the expected value: send what the call returns
                    value = eval(compile(test["call"], f"<test {i}>", "eval"), namespace)
                    send({"test": i, "value": encode(value)})
                else:  # any other test: only the child's word (counted as unverified)
                    exec(compile(test["source"], f"<test {i}>", "exec"), namespace)
                    send({"test": i, "passed": True})
            except BaseException as exc:
                send({"test": i, "error": describe(exc)})
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
    send({"done": True})
    exit_now(0)  # skip interpreter shutdown: no atexit handlers or __del__ of the program


def _install_audit_hook():  # pragma: no cover - runs in the child process
    """PEP 578 hook: friendly ``PermissionError`` messages for what the kernel refuses anyway.

    It is not the barrier (a program can dig it out of the interpreter); it names the rule
    broken instead of a bare EPERM, and refuses a few things that the kernel layers allow
    but a judged program has no business doing (``ctypes``, sub-interpreters).
    """
    import signal

    here = os.path.realpath(os.getcwd())
    readable = tuple([here] + [os.path.realpath(p) for p in sys.path])
    refused = frozenset({"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                         "subprocess.Popen", "os.kill", "os.killpg", "resource.setrlimit", "resource.prlimit",
                         "sys.remote_exec"})
    refused_prefixes = ("socket.", "ctypes.", "_ctypes.")
    refused_imports = ("_posixsubprocess", "_xxsubinterpreters", "_interpreters", "_test")
    path_events = frozenset({"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
                             "os.symlink", "os.truncate", "os.utime", "os.chflags", "os.setxattr",
                             "os.removexattr", "os.mkfifo", "os.mknod"})
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    realpath, isdir, fsdecode, sep = os.path.realpath, os.path.isdir, os.fsdecode, os.sep

    # builtins are bound here, once: a program that rebinds ``builtins.any`` changes nothing
    def inside(path, roots, realpath=realpath, fsdecode=fsdecode, sep=sep):
        real = realpath(fsdecode(path))
        for root in roots:
            if real == root or real.startswith(root + sep):
                return True
        return False

    def hook(event, args, isinstance=isinstance, str=str, bool=bool, PermissionError=PermissionError,
             inside=inside, here=(here,), readable=readable, isdir=isdir, int=int, bytes=bytes):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):  # wraps a descriptor that is already open
                return
            writing = bool(flags & write_flags) or (mode is not None and any_of(mode, "wax+"))
            if writing and not inside(path, here):
                raise PermissionError(f"sandbox: writing {path!r} outside the sandbox is not allowed")
            if not writing and not inside(path, here) and (not inside(path, readable) or isdir(path)):
                raise PermissionError(f"sandbox: reading {path!r} is not allowed")
        elif event == "import" and str(args[0]).startswith(refused_imports):
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        elif event in refused or event.startswith(refused_prefixes):
            raise PermissionError(f"sandbox: {event} is not allowed")
        elif event in path_events:
            for i, arg in enumerate(args):
                if event == "os.symlink" and i == 0:  # the target; reading through it is checked
                    continue
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg, here):
                    raise PermissionError(f"sandbox: {event} on {arg!r} outside the sandbox is not allowed")

    def any_of(mode, letters):
        for c in str(mode):
            if c in letters:
                return True
        return False

    # Functions that act on other processes and raise no audit event: remove them, for a clear
    # AttributeError (seccomp refuses the syscalls themselves, whatever module reaches them).
    posix, c_signal = sys.modules.get("posix", os), sys.modules.get("_signal", signal)
    for name in ("pidfd_open", "setpriority", "sched_setscheduler", "sched_setparam", "sched_setaffinity"):
        for module in (os, posix):
            if hasattr(module, name):
                delattr(module, name)
    for module in (signal, c_signal):
        if hasattr(module, "pidfd_send_signal"):
            delattr(module, "pidfd_send_signal")
    sys.addaudithook(hook)
