"""``longcat envs export-tau2``: a build's environments and tasks as tau2-bench domain data.

Per domain, ``OUT/<domain>/`` gets what tau2-bench keeps under ``data/tau2/domains/<name>/``
(see its ``src/tau2/domains/README.md``):

* ``db.json``          -- the initial database of the domain's first environment, tables keyed by
                          primary key (tau2's ``DB`` layout: ``{"orders": {"#W1": {...}}}``);
* ``tasks.json``       -- tau2 ``Task`` records (``tasks.to_tau2``); every task's
                          ``initial_state.initialization_data.agent_data`` is its environment's
                          full initial database, so a task runs on exactly the state it was
                          verified on;
* ``split_tasks.json`` -- ``{"base": [ids]}`` (tau2 requires a ``base`` split);
* ``policy.md``        -- ``policy.domain_policy``;
* ``tools.json``       -- the OpenAI function schemas of the domain's tools;
* ``domain.json``      -- the expanded domain spec, from which ``ExportedEnvironment`` rebuilds the
                          tools (longcat's generated implementations over SQLite).

``ExportedEnvironment`` offers the three operations tau2-bench's evaluator needs from an
environment (``set_state``, ``use_tool``, ``get_db_hash``), with tau2's hash: the sha256 of the
database as sorted-key JSON. There is no tau2-side Python loader (``environment.py`` /
``tools.py`` importing tau2): tau2-bench is not installable here, so such code could not be
tested; tests/envs/tau2_eval.py re-states tau2's evaluation over ``ExportedEnvironment``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

__all__ = ["export_tau2", "ExportedEnvironment", "db_as_json"]


def db_as_json(conn, domain) -> dict:
    """{entity: {primary key as text: row}} (tau2's dict-of-tables layout)."""
    from .db import dump

    out = {}
    for en, rows in dump(conn, domain).items():
        pk = domain.entities[en].primary_key
        out[en] = {str(r[pk]): r for r in rows}
    return out


def _initial_db(env: Mapping, domain) -> dict:
    from .datagen import apply_patch, template_db
    from .db import connect, restore

    conn = connect(domain)
    restore(conn, template_db(domain, env["template_seed"], env.get("rows", 6)))
    apply_patch(conn, domain, env.get("patch", ()))
    data = db_as_json(conn, domain)
    conn.close()
    return data


def export_tau2(build_dir: str | Path, out: str | Path, domains: list[str] | None = None) -> dict:
    """Writes the tau2 domain folders for the tasks of a ``longcat envs build`` folder; returns
    {domain: number of tasks}."""
    from .build import read_jsonl
    from .policy import domain_policy
    from .schemas import openai_tools
    from .spec import load_domain
    from .tasks import to_tau2

    build_dir, out = Path(build_dir), Path(out)
    if not (build_dir / "environments.jsonl").is_file():
        raise FileNotFoundError(f"{str(build_dir)!r} has no environments.jsonl: run `longcat "
                                f"envs build --out {build_dir}` first")
    envs = {e["env_id"]: e for e in read_jsonl(build_dir / "environments.jsonl")}
    by_dom: dict[str, list] = {}
    for t in read_jsonl(build_dir / "tasks.jsonl"):
        if domains is None or t["domain"] in domains:
            by_dom.setdefault(t["domain"], []).append(t)
    counts = {}
    for dom, tasks in by_dom.items():
        d = load_domain(dom)
        folder = out / dom
        folder.mkdir(parents=True, exist_ok=True)
        first = _initial_db(envs[tasks[0]["env_id"]], d)
        cache: dict[str, dict] = {}
        records = []
        for t in tasks:
            if t["env_id"] not in cache:
                cache = {t["env_id"]: _initial_db(envs[t["env_id"]], d)}
            records.append(to_tau2(t, {"agent_data": cache[t["env_id"]]}))
        (folder / "db.json").write_text(json.dumps(first, indent=1, default=str))
        (folder / "tasks.json").write_text(json.dumps(records, indent=1, default=str))
        (folder / "split_tasks.json").write_text(json.dumps({"base": [r["id"] for r in records]}))
        (folder / "policy.md").write_text(domain_policy(d))
        (folder / "tools.json").write_text(json.dumps(openai_tools(d), indent=1))
        (folder / "domain.json").write_text(json.dumps(d.expand(), indent=1, default=str))
        counts[dom] = len(records)
    return counts


class ExportedEnvironment:
    """An exported domain folder as an environment: ``set_state(initialization_data)``,
    ``use_tool(name, **arguments)``, ``get_db_hash()`` (tau2's hash of the whole database)."""

    def __init__(self, folder: str | Path):
        from .spec import load_domain

        self.folder = Path(folder)
        spec = json.loads((self.folder / "domain.json").read_text())
        self.domain = load_domain(spec["domain"])
        self.db = json.loads((self.folder / "db.json").read_text())
        self._open(self.db)

    def _open(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        from .db import connect, load
        from .toolgen import ToolRuntime

        self.conn = connect(self.domain)
        load(self.conn, self.domain, {en: list(rows.values()) for en, rows in data.items()})
        self.runtime = ToolRuntime(self.domain, self.conn)

    def set_state(self, initialization_data: Mapping | None) -> None:
        """Replaces the database with ``initialization_data["agent_data"]`` (tau2 merges it
        into its DB model; here it is always the whole database)."""
        if initialization_data and initialization_data.get("agent_data") is not None:
            self.conn.close()
            self._open(initialization_data["agent_data"])

    def use_tool(self, name: str, **arguments) -> Any:
        res = self.runtime.call(name, arguments)
        if res.is_error:
            raise ValueError(res.text())
        return res.data

    def get_db_hash(self) -> str:
        data = db_as_json(self.conn, self.domain)
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
