"""Runs inside fresh namespaces (``unshare --net --mount --pid --ipc --uts --fork``) as root of
those namespaces: builds a minimal read-only root, drops to an unprivileged uid, sets the rlimits
and runs the interpreter on the model's code in a child; exits with the code's status, or 128 + N
when a signal N ended it. Standard library only: it runs with ``python -I -S``.

argv[1] is the JSON config of ``sandbox.SandboxLimits`` plus ``uid``, ``python`` and ``ro_paths``;
the code arrives on stdin. Any failure here exits with status 121 and a message on stderr, so a
half-built sandbox never runs code."""
import ctypes
import json
import os
import resource
import sys
import tempfile

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38
SETUP_FAILED = 121

libc = ctypes.CDLL(None, use_errno=True)


def _b(s):
    return None if s is None else s.encode()


def mount(src, dst, fstype, flags, data=None):
    if libc.mount(_b(src), _b(dst), _b(fstype), flags, _b(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} -> {dst}: {os.strerror(err)}")


def bind_ro(src, dst):
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    mount(src, dst, None, MS_BIND | MS_REC)
    mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def main():
    cfg = json.loads(sys.argv[1])
    code = sys.stdin.buffer.read()
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # the new root lives on a tmpfs of this namespace only; the host's temp folder is hidden under it
    scratch = tempfile.gettempdir()
    mount("sandbox", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    root = os.path.join(scratch, "root")
    os.mkdir(root, 0o755)
    for p in cfg["ro_paths"]:
        dst = root + p
        if os.path.islink(p):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.symlink(os.readlink(p), dst)
        elif os.path.exists(p):
            bind_ro(p, dst)
    for dev in ("null", "zero", "urandom", "random"):
        bind_ro("/dev/" + dev, f"{root}/dev/{dev}")
    work = root + "/sandbox"
    os.mkdir(work)
    mount("sandbox-work", work, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={int(cfg['disk_mb'])}m,mode=0700,uid={cfg['uid']},gid={cfg['uid']}")
    with open(work + "/main.py", "wb") as f:
        f.write(code)
    os.chown(work + "/main.py", cfg["uid"], cfg["uid"])
    mount(None, scratch, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chroot(root)
    os.chdir("/sandbox")
    # this process stays as the namespace's init and reports how the code ended (unshare's own
    # re-raising of a child's signal fails in some containers); the code runs in a child
    pid = os.fork()
    if pid == 0:
        try:
            run_code(cfg)
        except BaseException as e:  # noqa: BLE001 - nothing of the code has run yet
            sys.stderr.write(f"sandbox setup failed: {type(e).__name__}: {e}\n")
        os._exit(SETUP_FAILED)
    _, status = os.waitpid(pid, 0)
    sys.stderr.flush()
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def run_code(cfg):
    """In the child: drop to the sandbox uid, set the limits, exec the interpreter."""
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(NO_NEW_PRIVS)")
    os.setgroups([])
    os.setgid(cfg["uid"])
    os.setuid(cfg["uid"])
    mb = 1 << 20
    limits = {resource.RLIMIT_CPU: (cfg["cpu_s"], cfg["cpu_s"] + 1),
              resource.RLIMIT_AS: (cfg["memory_mb"] * mb,) * 2,
              resource.RLIMIT_FSIZE: (cfg["file_mb"] * mb,) * 2,
              resource.RLIMIT_NPROC: (cfg["max_procs"],) * 2,
              resource.RLIMIT_NOFILE: (64, 64),
              resource.RLIMIT_CORE: (0, 0)}
    for k, v in limits.items():
        resource.setrlimit(k, v)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/sandbox", "TMPDIR": "/sandbox", "LANG": "C.UTF-8"}
    os.execve(cfg["python"], [cfg["python"], "-I", "-S", "-B", "main.py"], env)


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:  # noqa: BLE001 - any setup failure must stop before the code runs
        sys.stderr.write(f"sandbox setup failed: {type(e).__name__}: {e}\n")
        sys.exit(SETUP_FAILED)
