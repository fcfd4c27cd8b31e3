"""The code sandbox behind the ``python`` tool, and the shell-free ``calculator``.

``run_python(code, limits)`` runs model-written code in a separate process:

* new network, mount, PID, IPC and UTS namespaces (``unshare``): no network at all (only a
  downed loopback), and every process of the run dies with it;
* a minimal root: read-only binds of the interpreter and system libraries, nothing else of the
  host (no ``/etc``, no home, no ``/tmp``, no ``/proc``); a private tmpfs ``/sandbox`` of
  ``disk_mb`` as the only writable place (its working directory, gone after the run);
* an unprivileged uid of its own (no capabilities, ``no_new_privs``), and rlimits on CPU time,
  address space, file size, process count and open files; the parent enforces the wall time.

Where the kernel refuses namespaces, ``probe()`` says why and ``run_python`` raises
``SandboxUnavailable`` unless the caller opts out with ``allow_unsandboxed=True`` (then the code
runs with the rlimits and a private working directory only, and the result says so).

``calculator(expression)`` evaluates arithmetic through Python's ``ast`` (numbers, + - * / // %
**, unary signs, parentheses, a few math functions); nothing is executed, so it needs no sandbox.
"""
from __future__ import annotations

import ast
import json
import math
import operator
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache

__all__ = ["SandboxLimits", "SandboxResult", "SandboxUnavailable", "probe", "run_python",
           "calculator", "PYTHON_TOOL", "CALCULATOR_TOOL"]

_INIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_init.py")
_SETUP_FAILED = 121
MAX_CODE_BYTES = 64 * 1024


class SandboxUnavailable(RuntimeError):
    """The kernel does not allow the namespaces the sandbox needs (and no opt-out was given)."""


@dataclass(frozen=True)
class SandboxLimits:
    cpu_s: int = 5            # CPU seconds (SIGXCPU, then SIGKILL)
    wall_s: float = 10.0      # wall-clock seconds, enforced by the parent
    memory_mb: int = 256      # address space
    file_mb: int = 4          # largest file the code may write (also caps stdout/stderr)
    disk_mb: int = 16         # size of the private /sandbox tmpfs
    max_procs: int = 16       # processes + threads of the sandbox's uid
    output_chars: int = 8000  # stdout/stderr characters returned

    def __post_init__(self):
        for k, v in asdict(self).items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"SandboxLimits.{k}: expected a positive number, got {v!r}")


@dataclass
class SandboxResult:
    ok: bool                  # exited with status 0 within every limit
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool           # killed at the wall-time limit
    signal: str | None        # the signal that ended it (SIGXCPU, SIGKILL, SIGXFSZ, ...)
    isolated: bool            # False only for an opted-out run without namespaces
    seconds: float

    def to_text(self) -> str:
        """The tool observation an agent sees."""
        parts = []
        if self.stdout:
            parts.append(self.stdout)
        if self.stderr:
            parts.append("[stderr]\n" + self.stderr)
        if self.timed_out:
            parts.append("[killed: wall-time limit]")
        elif self.signal:
            parts.append(f"[killed: {self.signal}]")
        elif self.exit_code:
            parts.append(f"[exit status {self.exit_code}]")
        return "\n".join(parts) if parts else "[no output]"


@lru_cache(maxsize=1)
def probe() -> tuple[bool, str]:
    """(True, "") when this kernel/container lets us create the sandbox's namespaces, else
    (False, the reason)."""
    if sys.platform != "linux":
        return False, f"namespaces need Linux, this is {sys.platform}"
    if shutil.which("unshare") is None:
        return False, "the unshare(1) program (util-linux) is not installed"
    try:
        r = subprocess.run(["unshare", "--net", "--mount", "--pid", "--ipc", "--uts", "--fork",
                            "true"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"unshare failed: {e}"
    if r.returncode != 0:
        return False, ("unshare --net --mount --pid was refused (needs root or CAP_SYS_ADMIN; "
                       f"user namespaces are not used): {r.stderr.decode(errors='replace').strip()}")
    return True, ""


def _ro_paths() -> list[str]:
    """What the interpreter needs, read-only: system libraries and the Python installation."""
    paths = ["/usr", "/bin", "/lib", "/lib64", "/lib32", "/libx32", "/sbin"]
    prefix = os.path.realpath(sys.base_prefix)
    if not any(prefix == p or prefix.startswith(p + "/") for p in paths):
        paths.append(prefix)
    return paths


def _python() -> str:
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    return exe if os.path.exists(exe) else os.path.realpath(sys.executable)


def _read(path: str, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit * 4 + 1)
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "\n[... output truncated]"


def _rlimits(lim: SandboxLimits):
    import resource

    mb = 1 << 20

    def apply():
        os.setsid()
        resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_s, lim.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (lim.memory_mb * mb,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim.file_mb * mb,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _live_pids(uid: int) -> list[int]:
    """Running (not zombie) processes of ``uid``."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/status") as f:
                st = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if int(st.get("Uid", "-1").split()[0]) == uid and not st.get("State", "").strip().startswith("Z"):
            out.append(int(p))
    return out


def _wait_gone(uid: int, timeout: float = 5.0) -> None:
    """The kernel kills the rest of a PID namespace when its first process dies, but not
    synchronously: wait until none of the run's processes is still running."""
    end = time.monotonic() + timeout
    while _live_pids(uid) and time.monotonic() < end:
        time.sleep(0.02)


def run_python(code: str, limits: SandboxLimits | None = None, *,
               allow_unsandboxed: bool = False) -> SandboxResult:
    """Runs ``code`` (a Python program; print what you want to see) in the sandbox."""
    if not isinstance(code, str):
        raise ValueError(f"code: expected a string, got {type(code).__name__}")
    raw = code.encode("utf-8", errors="replace")
    if len(raw) > MAX_CODE_BYTES:
        raise ValueError(f"code: at most {MAX_CODE_BYTES} bytes, got {len(raw)}")
    lim = limits or SandboxLimits()
    ok, why = probe()
    if not ok and not allow_unsandboxed:
        raise SandboxUnavailable(f"cannot isolate code here ({why}); pass allow_unsandboxed=True "
                                 "to run it with rlimits only")
    with tempfile.TemporaryDirectory(prefix="longcat-sbx-") as tmp:
        out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            if ok:
                # a uid of its own, so RLIMIT_NPROC counts only this run's processes
                cfg = dict(asdict(lim), uid=random.randrange(200_000, 2_000_000_000),
                           python=_python(), ro_paths=_ro_paths())
                argv = ["unshare", "--net", "--mount", "--pid", "--ipc", "--uts", "--fork",
                        "--kill-child", _python(), "-I", "-S", "-B", _INIT, json.dumps(cfg)]
                kw = {"start_new_session": True}
            else:
                work = os.path.join(tmp, "work")
                os.mkdir(work)
                with open(os.path.join(work, "main.py"), "wb") as f:
                    f.write(raw)
                argv = [_python(), "-I", "-S", "-B", "main.py"]
                kw = {"cwd": work, "preexec_fn": _rlimits(lim),
                      "env": {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work}}
            t0 = time.monotonic()
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err, **kw)
            timed_out = False
            try:
                proc.communicate(raw if ok else b"", timeout=lim.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if ok:
                _wait_gone(cfg["uid"])
            secs = time.monotonic() - t0
        rc = proc.returncode
        stderr = _read(err_path, lim.output_chars)
        if ok and rc == _SETUP_FAILED and stderr.startswith("sandbox setup failed"):
            raise SandboxUnavailable(stderr.strip())
        sig = None
        if rc is not None and rc < 0:
            sig = signal.Signals(-rc).name
        elif ok and rc is not None and rc > 128 and rc - 128 < signal.NSIG:
            # the namespace's init (_sandbox_init) reports code killed by signal N as 128 + N
            sig = signal.Signals(rc - 128).name
        return SandboxResult(ok=rc == 0 and not timed_out, exit_code=rc,
                             stdout=_read(out_path, lim.output_chars), stderr=stderr,
                             timed_out=timed_out, signal=None if timed_out else sig,
                             isolated=ok, seconds=secs)


# -- calculator ------------------------------------------------------------------------------
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
        ast.Pow: operator.pow}
_UN = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max,
          "log": math.log, "exp": math.exp, "floor": math.floor, "ceil": math.ceil}
_CONSTS = {"pi": math.pi, "e": math.e}
MAX_EXPRESSION_CHARS = 2000
_MAX_DIGITS = 4000


def _eval(node):
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UN:
        return _UN[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        a, b = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and isinstance(b, (int, float)) and \
                abs(b) * math.log10(max(abs(a), 2)) > _MAX_DIGITS:
            raise ValueError(f"result too large (over {_MAX_DIGITS} digits)")
        if isinstance(node.op, ast.Mult) and isinstance(a, int) and isinstance(b, int) and \
                a.bit_length() + b.bit_length() > _MAX_DIGITS * 3.33:
            raise ValueError(f"result too large (over {_MAX_DIGITS} digits)")
        return _BIN[type(node.op)](a, b)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id in _FUNCS and not node.keywords:
        return _FUNCS[node.func.id](*[_eval(a) for a in node.args])
    raise ValueError(f"unsupported element {type(node).__name__}"
                     + (f" {node.id!r}" if isinstance(node, ast.Name) else ""))


def calculator(expression: str) -> str:
    """The value of an arithmetic expression as text (raises ValueError on anything else)."""
    if not isinstance(expression, str):
        raise ValueError(f"expression: expected a string, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression: at most {MAX_EXPRESSION_CHARS} characters, "
                         f"got {len(expression)}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"expression: not arithmetic ({e.msg})") from None
    try:
        return repr(_eval(tree))
    except (ArithmeticError, OverflowError) as e:
        raise ValueError(f"expression: {type(e).__name__}: {e}") from None
    except (ValueError, TypeError) as e:
        raise ValueError(f"expression: {e}") from None


PYTHON_TOOL = {"type": "function", "function": {
    "name": "python", "description": "Run a Python program in an isolated sandbox (no network, "
    "no host files, limited CPU time and memory) and return what it prints.",
    "parameters": {"type": "object", "properties": {"code": {"type": "string"}},
                   "required": ["code"]}}}
CALCULATOR_TOOL = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression "
    "(+ - * / // % **, parentheses, sqrt, log, exp, min, max, round, pi, e).",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                   "required": ["expression"]}}}
