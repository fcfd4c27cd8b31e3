"""The code sandbox (longcat.envs.service.sandbox): every escape attempt of the issue is run and
must be contained, plus the calculator and the refusal to run unsandboxed without an opt-out."""
import os
import socket
import tempfile
import threading

import pytest

from longcat.envs.service import sandbox
from longcat.envs.service.sandbox import (SandboxLimits, SandboxUnavailable, calculator, probe,
                                          run_python)

ISOLATED, WHY = probe()
needs_ns = pytest.mark.skipif(not ISOLATED, reason=f"no namespaces here: {WHY}")
FAST = SandboxLimits(cpu_s=2, wall_s=8, memory_mb=256, file_mb=1, max_procs=8)


def _sandbox_procs() -> list[int]:
    """Running (not zombie) processes with a sandbox uid (run_python draws them from 200,000
    and up)."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/status") as f:
                    st = dict(line.split(":", 1) for line in f if ":" in line)
            except OSError:
                continue
            if int(st["Uid"].split()[0]) >= 200_000 and not st["State"].strip().startswith("Z"):
                out.append(int(p))
    return out


@needs_ns
def test_runs_code_and_returns_output():
    r = run_python("print(sum(range(10)))\nimport os; print(os.getcwd(), os.getuid() > 0)", FAST)
    assert r.ok and r.isolated and r.exit_code == 0
    assert r.stdout.split() == ["45", "/sandbox", "True"]
    assert r.to_text().startswith("45")


@needs_ns
def test_fork_bomb_is_contained():
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = run_python(code, SandboxLimits(cpu_s=2, wall_s=4, max_procs=8))
    assert not r.ok and (r.timed_out or r.signal)
    assert _sandbox_procs() == []   # the PID namespace took every fork with it


@needs_ns
def test_process_limit():
    code = ("import os, sys\nn = 0\ntry:\n    for _ in range(64):\n        if os.fork() == 0:\n"
            "            import time; time.sleep(5); os._exit(0)\n        n += 1\n"
            "except OSError as e:\n    print('refused after', n, e.errno)\n")
    r = run_python(code, SandboxLimits(wall_s=8, max_procs=8))
    assert "refused after" in r.stdout and int(r.stdout.split()[2]) < 8


@needs_ns
def test_memory_bomb_is_contained():
    r = run_python("x = bytearray(4 * 1024**3)\nprint('allocated')", FAST)
    assert not r.ok and "MemoryError" in r.stderr and "allocated" not in r.stdout


@needs_ns
def test_infinite_loop_is_killed():
    r = run_python("while True:\n    pass\n", SandboxLimits(cpu_s=1, wall_s=4))
    assert not r.ok and (r.timed_out or r.signal in ("SIGXCPU", "SIGKILL"))
    assert r.seconds < 6


@needs_ns
def test_host_files_are_invisible(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    home = os.path.expanduser("~")
    code = (f"import os\nfor p in ['/etc/passwd', {str(secret)!r}, '/etc/shadow', '/proc/1/environ']:\n"
            "    try:\n        open(p).read(); print('READ', p)\n"
            "    except OSError as e:\n        print('denied', p, type(e).__name__)\n"
            f"try:\n    print('HOME', sorted(os.listdir({home!r})))\nexcept OSError:\n    print('HOME', [])\n")
    r = run_python(code, FAST)
    assert "READ" not in r.stdout, r.stdout
    assert r.stdout.count("denied") == 4
    listed = eval(r.stdout.split("HOME", 1)[1].strip())
    # at most the directory that leads to the Python installation (bound read-only) is there
    prefix = os.path.realpath(os.sys.base_prefix)
    allowed = {prefix[len(home) + 1:].split("/")[0]} if prefix.startswith(home + "/") else set()
    assert set(listed) <= allowed


@needs_ns
def test_no_network():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(srv.accept()), daemon=True).start()
    code = ("import socket\nfor addr in [('127.0.0.1', %d), ('1.1.1.1', 53), ('8.8.8.8', 443)]:\n"
            "    try:\n        socket.create_connection(addr, timeout=2); print('CONNECTED', addr)\n"
            "    except OSError as e:\n        print('blocked', e.errno)\n" % port)
    r = run_python(code, FAST)
    srv.close()
    assert "CONNECTED" not in r.stdout and r.stdout.count("blocked") == 3
    assert accepted == []


@needs_ns
def test_writes_outside_its_folder_fail():
    host_tmp = os.path.join(tempfile.gettempdir(), "evil")
    code = (f"import os\nfor p in ['/usr/evil', '/evil', {host_tmp!r}, '/lib/evil']:\n"
            "    try:\n        open(p, 'w').write('x'); print('WROTE', p)\n"
            "    except OSError as e:\n        print('denied', p)\n"
            "open('/sandbox/ok.txt', 'w').write('fine'); print(open('ok.txt').read())\n")
    r = run_python(code, FAST)
    assert "WROTE" not in r.stdout and r.stdout.count("denied") == 4 and "fine" in r.stdout
    for p in ("/usr/evil", "/evil", "/lib/evil"):
        assert not os.path.exists(p)


@needs_ns
def test_file_size_limit():
    r = run_python("open('big', 'wb').write(b'x' * (3 * 1024 * 1024))\nprint('wrote')", FAST)
    assert not r.ok and "wrote" not in r.stdout


def test_refuses_without_namespaces_unless_opted_out(monkeypatch):
    monkeypatch.setattr(sandbox, "probe", lambda: (False, "test: namespaces refused"))
    with pytest.raises(SandboxUnavailable, match="allow_unsandboxed"):
        run_python("print(1)")
    r = run_python("print(6 * 7)", FAST, allow_unsandboxed=True)
    assert r.ok and r.stdout.strip() == "42" and not r.isolated


def test_bad_arguments():
    with pytest.raises(ValueError, match="code"):
        run_python(123)
    with pytest.raises(ValueError, match="code"):
        run_python("x" * (sandbox.MAX_CODE_BYTES + 1))
    with pytest.raises(ValueError, match="SandboxLimits.cpu_s"):
        SandboxLimits(cpu_s=0)


def test_calculator():
    assert calculator("2 + 3 * (4 - 1)") == "11"
    assert calculator("7 / 2") == "3.5"
    assert calculator("sqrt(16) + max(1, 5)") == "9.0"
    assert calculator("-2 ** 10") == "-1024"
    for bad in ["__import__('os').system('id')", "open('/etc/passwd')", "x", "().__class__",
                "9 ** 9 ** 9", "1 / 0", "lambda: 1", ""]:
        with pytest.raises(ValueError, match="expression|unsupported|too large"):
            calculator(bad)
    with pytest.raises(ValueError, match="expression"):
        calculator(None)
