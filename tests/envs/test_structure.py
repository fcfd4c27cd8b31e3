"""Package structure: no module-level import cycles inside longcat.envs (the hook registry is
dependency-free), and ``import longcat.envs`` loads neither torch nor the compiled kernels."""
import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

import longcat.envs

PKG = Path(longcat.envs.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["longcat", "envs", *parts])


def _top_level_imports(path: Path, name: str) -> set[str]:
    """Modules of longcat.envs imported at module level (not inside functions or
    ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg.split(".")
            base = base[: len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:
                out |= {f"{mod}.{a.name}" for a in node.names}
            else:
                out.add(mod)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("longcat.envs"):
            out.add(node.module)
    return out


def test_no_import_cycles():
    G = nx.DiGraph()
    for path in PKG.rglob("*.py"):
        name = _module_name(path)
        G.add_node(name)
        for dep in _top_level_imports(path, name):
            G.add_edge(name, dep)
    cycles = list(nx.simple_cycles(G))
    assert not cycles, cycles
    # the registry is a leaf: spec, toolgen and the hook modules meet only there
    assert G.out_degree("longcat.envs.registry") == 0
    assert ("longcat.envs.hooks.retail", "longcat.envs.toolgen") not in G.edges


def test_import_envs_without_kernels():
    code = ("import sys, longcat.envs, longcat.envs.runtime, longcat.envs.agents, "
            "longcat.envs.cli, longcat.envs.episodes, longcat.envs.users\n"
            "print(sorted(m for m in ('torch', 'longcat._C', 'longcat.ops') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
