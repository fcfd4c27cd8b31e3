"""A domain's database on SQLite: DDL from the spec, row I/O, snapshot/restore and stable hashes.

One connection per environment (in memory by default, a file on request). Connections are opened
in autocommit mode (``isolation_level=None``) with foreign keys enforced, so the tool runtime owns
transactions explicitly (SAVEPOINT / RELEASE / ROLLBACK TO).

Storage: string/date/datetime/enum -> TEXT, integer -> INTEGER, number -> REAL, boolean ->
INTEGER 0/1 (read back as bool). Enum, boolean and date/datetime formats are CHECK constraints, so
even hand-written hooks cannot store a value the spec forbids.

API (stable):
  - ``ddl(domain) -> list[str]``: CREATE TABLE statements (entities in reference order).
  - ``connect(domain, path=":memory:") -> sqlite3.Connection``: a new database with the schema.
  - ``insert_rows(conn, domain, entity, rows)``, ``load(conn, domain, data)`` (entity -> rows).
  - ``dump(conn, domain, entities=None) -> {entity: [row, ...]}`` rows sorted by primary key,
    values as Python/JSON values (booleans as bool).
  - ``table_hashes(conn, domain, entities=None) -> {entity: sha256}``, ``db_hash(conn, domain,
    entities=None) -> sha256`` of the canonical JSON of ``dump`` (tau2-bench style DB hash).
  - ``snapshot(conn) -> Snapshot``, ``restore(conn, snap)``: a full copy through SQLite's backup API.
  - ``DbState(conn, domain)``: the ``exists / count / field / sum`` reads of ``conditions``.
  - ``new_id(conn, domain, entity)``: the next free primary key (deterministic in the state);
    ``format_id(entity, n)``: the n-th string id.
  - ``row_from_db(entity, row)`` / ``value_to_db(field, v)``: conversions.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any, Iterable

from .spec import Domain, Entity, Field

__all__ = ["ddl", "connect", "insert_rows", "load", "dump", "db_hash", "table_hashes", "snapshot",
           "restore", "Snapshot", "DbState", "new_id", "format_id", "row_from_db", "value_to_db", "q"]

_SQL_TYPE = {"string": "TEXT", "integer": "INTEGER", "number": "REAL", "boolean": "INTEGER",
             "date": "TEXT", "datetime": "TEXT", "enum": "TEXT"}


def q(name: str) -> str:
    """Quotes an identifier. Spec names are validated as [a-z][a-z0-9_]*; quoting also keeps
    names like `order` (an SQL keyword) usable."""
    return '"' + name.replace('"', '""') + '"'


def _sql_lit(v) -> str:
    return "'" + str(v).replace("'", "''") + "'"


def _column(f: Field, is_pk: bool) -> str:
    col = f"{q(f.name)} {_SQL_TYPE[f.type]}"
    if is_pk:
        col += " PRIMARY KEY"
    if not f.nullable:
        col += " NOT NULL"
    if f.unique and not is_pk:
        col += " UNIQUE"
    checks = []
    if f.type == "enum":
        checks.append(f"{q(f.name)} IN ({', '.join(_sql_lit(v) for v in f.values)})")
    elif f.type == "boolean":
        checks.append(f"{q(f.name)} IN (0, 1)")
    elif f.type == "date":
        # through julianday, because SQLite's date() accepts day 31 in any month
        checks.append(f"date(julianday({q(f.name)})) IS {q(f.name)}")
    elif f.type == "datetime":
        checks.append(f"strftime('%Y-%m-%dT%H:%M:%S', julianday({q(f.name)})) IS {q(f.name)}")
    elif f.type == "integer":
        checks.append(f"typeof({q(f.name)}) = 'integer'")
    elif f.type == "number":
        checks.append(f"typeof({q(f.name)}) IN ('integer', 'real')")
    elif f.type == "string":
        checks.append(f"typeof({q(f.name)}) = 'text'")
    if f.type in ("integer", "number"):
        if f.min is not None:
            checks.append(f"{q(f.name)} >= {f.min!r}")
        if f.max is not None:
            checks.append(f"{q(f.name)} <= {f.max!r}")
    if checks:
        cond = " AND ".join(checks)
        col += f" CHECK ({q(f.name)} IS NULL OR ({cond}))" if f.nullable else f" CHECK ({cond})"
    return col


def ddl(domain: Domain) -> list[str]:
    out = []
    for en in domain.entity_order():
        e = domain.entities[en]
        cols = [_column(f, f.name == e.primary_key) for f in e.fields.values()]
        for f in e.fields.values():
            if f.ref:
                cols.append(f"FOREIGN KEY ({q(f.name)}) REFERENCES {q(f.ref[0])}({q(f.ref[1])})")
        out.append(f"CREATE TABLE {q(en)} (\n  " + ",\n  ".join(cols) + "\n)")
        for f in e.fields.values():
            if f.ref:   # list_by / count / delete checks filter on foreign keys
                out.append(f"CREATE INDEX {q(f'ix_{en}_{f.name}')} ON {q(en)}({q(f.name)})")
    return out


def connect(domain: Domain, path: str = ":memory:") -> sqlite3.Connection:
    """A new connection with the domain's schema created (tables that exist are kept)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not have:
        conn.execute("BEGIN")
        try:
            for stmt in ddl(domain):
                conn.execute(stmt)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    else:
        missing = set(domain.entities) - have
        if missing:
            raise ValueError(f"database {path!r} lacks tables {sorted(missing)} of domain {domain.name!r}")
    return conn


def value_to_db(f: Field, v):
    if v is None:
        return None
    if f.type == "boolean":
        return int(bool(v)) if isinstance(v, bool) else v
    return v


def value_from_db(f: Field, v):
    if v is None:
        return None
    if f.type == "boolean":
        return bool(v)
    if f.type == "number":
        return float(v)
    return v


def row_from_db(e: Entity, row: Iterable) -> dict:
    return {name: value_from_db(f, v) for (name, f), v in zip(e.fields.items(), row)}


def insert_rows(conn: sqlite3.Connection, domain: Domain, entity: str, rows: list[dict]) -> None:
    """Inserts rows (dicts of field -> value; missing fields take their default or null)."""
    e = domain.entity(entity)
    names = list(e.fields)
    for r in rows:
        unknown = set(r) - set(names)
        if unknown:
            raise ValueError(f"rows for {entity!r} have unknown fields {sorted(unknown)} (fields: {names})")
    sql = f"INSERT INTO {q(entity)} ({', '.join(map(q, names))}) VALUES ({', '.join('?' * len(names))})"
    conn.executemany(sql, [[value_to_db(f, r.get(n, f.default)) for n, f in e.fields.items()] for r in rows])


def load(conn: sqlite3.Connection, domain: Domain, data: dict[str, list[dict]]) -> None:
    """Inserts rows for several entities in one transaction, referenced entities first."""
    unknown = set(data) - set(domain.entities)
    if unknown:
        raise ValueError(f"domain {domain.name!r} has no entities {sorted(unknown)}")
    conn.execute("SAVEPOINT load_rows")
    try:
        for en in domain.entity_order():
            if data.get(en):
                insert_rows(conn, domain, en, data[en])
        conn.execute("RELEASE load_rows")
    except BaseException:
        conn.execute("ROLLBACK TO load_rows")
        conn.execute("RELEASE load_rows")
        raise


def dump(conn: sqlite3.Connection, domain: Domain, entities: Iterable[str] | None = None) -> dict:
    out = {}
    for en in sorted(entities if entities is not None else domain.entities):
        e = domain.entity(en)
        cur = conn.execute(f"SELECT {', '.join(map(q, e.fields))} FROM {q(en)} ORDER BY {q(e.primary_key)}")
        out[en] = [row_from_db(e, r) for r in cur]
    return out


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
                          .encode("utf-8")).hexdigest()


def table_hashes(conn: sqlite3.Connection, domain: Domain, entities: Iterable[str] | None = None) -> dict:
    """Per-table sha256 of the canonical JSON of its rows (column names, then rows as stored,
    sorted by primary key). Stored values are canonical already (booleans 0/1, ISO text), so
    this skips the conversions of ``dump``: hashing runs after every call in tests and RL."""
    out = {}
    for en in sorted(entities if entities is not None else domain.entities):
        e = domain.entity(en)
        cols = list(e.fields)
        rows = conn.execute(f"SELECT {', '.join(map(q, cols))} FROM {q(en)} ORDER BY {q(e.primary_key)}").fetchall()
        out[en] = hashlib.sha256(json.dumps([cols, rows], separators=(",", ":")).encode("utf-8")).hexdigest()
    return out


def db_hash(conn: sqlite3.Connection, domain: Domain, entities: Iterable[str] | None = None) -> str:
    """One sha256 over the chosen tables (all by default); equal states give equal hashes."""
    return _sha(table_hashes(conn, domain, entities))


class Snapshot:
    """A full copy of a database (an in-memory SQLite copy made with the backup API)."""

    def __init__(self, conn: sqlite3.Connection):
        self._copy = sqlite3.connect(":memory:", check_same_thread=False)
        conn.backup(self._copy)

    def close(self):
        self._copy.close()

    # Picklable as its database image, so an environment holding one (the stale-read noise keeps
    # the database from before the latest write) can be suspended and resumed.
    def __getstate__(self):
        return {"image": self._copy.serialize()}

    def __setstate__(self, state):
        self._copy = sqlite3.connect(":memory:", check_same_thread=False)
        self._copy.deserialize(state["image"])


def snapshot(conn: sqlite3.Connection) -> Snapshot:
    if conn.in_transaction:
        raise RuntimeError("snapshot inside an open transaction would copy uncommitted state")
    return Snapshot(conn)


def restore(conn: sqlite3.Connection, snap: Snapshot) -> None:
    """Replaces the connection's database with the snapshot (the snapshot stays usable)."""
    if conn.in_transaction:
        raise RuntimeError("restore inside an open transaction")
    snap._copy.backup(conn)
    conn.execute("PRAGMA foreign_keys = ON")


def _where(e: Entity, filters: dict) -> tuple[str, list]:
    if not filters:
        return "", []
    parts, args = [], []
    for k, v in filters.items():
        f = e.fields[k]
        if v is None:
            parts.append(f"{q(k)} IS NULL")
        else:
            parts.append(f"{q(k)} = ?")
            args.append(value_to_db(f, v))
    return " WHERE " + " AND ".join(parts), args


class DbState:
    """Reads used by conditions; every value is bound, never formatted into SQL."""

    def __init__(self, conn: sqlite3.Connection, domain: Domain):
        self.conn, self.domain = conn, domain

    def exists(self, entity: str, filters: dict) -> bool:
        e = self.domain.entities[entity]
        w, a = _where(e, filters)
        return self.conn.execute(f"SELECT EXISTS(SELECT 1 FROM {q(entity)}{w})", a).fetchone()[0] == 1

    def count(self, entity: str, filters: dict) -> int:
        e = self.domain.entities[entity]
        w, a = _where(e, filters)
        return self.conn.execute(f"SELECT COUNT(*) FROM {q(entity)}{w}", a).fetchone()[0]

    def field(self, entity: str, key, name: str):
        e = self.domain.entities[entity]
        if key is None:
            return None
        r = self.conn.execute(f"SELECT {q(name)} FROM {q(entity)} WHERE {q(e.primary_key)} = ?",
                              [key]).fetchone()
        return None if r is None else value_from_db(e.fields[name], r[0])

    def sum(self, entity: str, name: str, filters: dict):
        e = self.domain.entities[entity]
        w, a = _where(e, filters)
        v = self.conn.execute(f"SELECT TOTAL({q(name)}) FROM {q(entity)}{w}", a).fetchone()[0]
        return int(v) if e.fields[name].type == "integer" else float(v)

    def get(self, entity: str, key) -> dict | None:
        e = self.domain.entities[entity]
        r = self.conn.execute(f"SELECT {', '.join(map(q, e.fields))} FROM {q(entity)} "
                              f"WHERE {q(e.primary_key)} = ?", [key]).fetchone()
        return None if r is None else row_from_db(e, r)


def new_id(conn: sqlite3.Connection, domain: Domain, entity: str) -> Any:
    """Next primary key: max+1 for integers; for strings the id prefix (default the entity's first
    letters, upper case) + a zero-padded number one above the row count, skipping taken ones."""
    e = domain.entity(entity)
    pk = e.primary_key
    if e.pk.type == "integer":
        v = conn.execute(f"SELECT MAX({q(pk)}) FROM {q(entity)}").fetchone()[0]
        return 1 if v is None else int(v) + 1
    n = conn.execute(f"SELECT COUNT(*) FROM {q(entity)}").fetchone()[0] + 1
    while True:
        cand = format_id(e, n)
        if not conn.execute(f"SELECT 1 FROM {q(entity)} WHERE {q(pk)} = ?", [cand]).fetchone():
            return cand
        n += 1


_B36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def format_id(e: Entity, n: int) -> str:
    """The n-th string id of an entity: prefix + 6 digits, or, when the field's max_length is
    shorter (airport codes), n in base 36 padded to max_length."""
    prefix = e.id_prefix if e.id_prefix is not None else e.name[:3].upper() + "-"
    cand = f"{prefix}{n:06d}"
    ml = e.pk.max_length
    if ml is None or len(cand) <= ml:
        return cand
    s = ""
    while n:
        n, r = divmod(n, 36)
        s = _B36[r] + s
    if len(s) > ml:
        raise ValueError(f"entity {e.name!r}: id number {n} does not fit max_length {ml}")
    return s.rjust(ml, "A")
