"""Domain specifications: the YAML format, its validation, and the expanded tool definitions.

A domain file (``envs/<domain>.yaml``) declares a database schema and tools compactly; loading it
expands every tool into full data (JSON-Schema parameters and returns, READ/WRITE mode, parsed
pre/postconditions), validated against the schema. Errors raise ``SpecError`` naming the file, the
path in the document and the problem.

Format::

    domain: retail                       # must equal the file name stem
    description: ...
    now: "2025-01-15T10:00:00"           # the domain clock ($now), fixed for determinism
    hooks: longcat.envs.hooks.retail     # optional module imported on load (registers custom hooks)
    user_held: [email, user_id]          # semantic keys the user knows (not graph dependencies)
    entities:
      order:
        description: ...
        primary_key: order_id            # default: the first field
        id_prefix: "#W"                  # ids for created rows: prefix + zero-padded number
        fields:
          order_id: {type: string}
          user_id: {type: string, ref: user.user_id}           # foreign key Entity.field
          status: {type: enum, values: [pending, delivered, cancelled]}
          total: {type: number, min: 0}
          note: {type: string, nullable: true, faker: sentence}
          email: {type: string, unique: true, faker: email, key: email}
    tools:
      - {name: get_order_details, kind: get, entity: order, description: ...}
      - name: cancel_pending_order
        kind: set_status                 # see KINDS
        entity: order
        from: [pending]
        to: cancelled
        params: {reason: {type: enum, values: [no longer needed, ordered by mistake], field: order.cancel_reason}}
        set: {cancel_reason: $reason}
        pre: ["field(order, $order_id, user_id) != null"]
        post: [{cond: "after.field(order, $order_id, cancel_reason) == $reason"}]

Field types: string, integer, number, boolean, date (YYYY-MM-DD), datetime (YYYY-MM-DDTHH:MM:SS),
enum (``values``). Field options: ``nullable``, ``unique``, ``ref`` (``Entity.field``, a primary
key or unique field), ``default``, ``min``/``max`` (numbers), ``max_length`` (strings), ``faker``
(a Faker provider name, a hint for data generation), ``key`` (semantic key), ``description``.

Semantic keys connect tools in the dependency graph: a primary key ``id`` of entity ``order`` has
key ``order_id`` (a primary key named otherwise keeps its name), a foreign key has the key of the
field it references, other fields have a key only when they declare ``key:``.

Tool kinds (``KINDS``), READ unless noted; each adds generated parameters, conditions and a
returns schema, and every tool may add ``params`` (name -> field options plus ``required``,
``description``, ``field: Entity.field`` which sets its type and semantic key), ``pre``, ``post``
(strings or ``{cond, message}``), and for writes ``set`` (field -> literal, ``$param`` or ``$now``):

  get            by primary key; returns the row
  find_by        ``by: [fields]``, all required; returns the first matching row (by primary key)
  list_by        ``by: [fields]`` required, ``optional: [fields]`` optional equality filters, ``limit``; rows
  search         ``fields: [fields]`` all optional (strings match case-insensitive substrings), ``limit``; rows
  count          ``by`` as list_by; returns ``{"count": n}``
  aggregate      ``op: sum|avg|min|max``, ``field``, ``by``; returns ``{"value": x}``
  create         WRITE; ``fields`` as parameters (``optional: [...]`` may be left out), others from
                 ``set``/``default``/null; the primary key is generated; returns the new row
  update_fields  WRITE; primary key + ``fields`` (all required); returns the row
  set_status     WRITE; ``field`` (default status), ``from: [states]``, ``to: state``; returns the row
  cancel         set_status with ``to`` defaulting to ``cancelled``
  delete         WRITE; refused while other rows reference the row; returns ``{"deleted": key}``
  adjust         WRITE; ``field`` (numeric) += ``$amount``; ``min``/``max`` bound the result; returns the row
  custom         ``hook: name`` registered with ``toolgen.register_hook``; ``mode: read|write``,
                 parameters, conditions and ``returns`` declared by hand (``entity`` optional)

API (stable): ``load_domain(name_or_path) -> Domain``, ``load_all(names=None)``,
``domain_names()``, ``domains_dir()``, ``parse_domain(doc, source)``, ``Domain.expand()`` (the full
tool definitions as JSON-able data), ``Domain.tool(name)``, ``Domain.entity(name)``,
``Field.json_schema()``, ``Entity.row_schema()``, classes ``Domain / Entity / Field / Tool / Param``,
``SpecError``.
"""
from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field as dc_field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from . import conditions as C

__all__ = ["SpecError", "Field", "Entity", "Param", "Tool", "Domain", "TYPES", "KINDS",
           "load_domain", "load_all", "parse_domain", "domain_names", "domains_dir",
           "parse_domains"]

TYPES = ("string", "integer", "number", "boolean", "date", "datetime", "enum")
KINDS = ("get", "find_by", "list_by", "search", "count", "aggregate", "create", "update_fields",
         "set_status", "cancel", "delete", "adjust", "custom")
WRITE_KINDS = {"create", "update_fields", "set_status", "cancel", "delete", "adjust"}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")   # OpenAI's name rule
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
STRING_MAX = 2000


class SpecError(ValueError):
    """A malformed domain specification: the message names the file, the path inside it and the problem."""

    def __init__(self, source: str, path: str, problem: str):
        self.source, self.path, self.problem = source, path, problem
        super().__init__(f"{source}: {path}: {problem}" if path else f"{source}: {problem}")


# ------------------------------------------------------------------------------------ data model
@dataclass
class Field:
    name: str
    type: str
    entity: str
    nullable: bool = False
    unique: bool = False
    values: list | None = None           # enum values
    ref: tuple[str, str] | None = None   # (entity, field) of a foreign key
    default: Any = None
    has_default: bool = False
    min: float | None = None
    max: float | None = None
    max_length: int | None = None
    faker: str | None = None
    key: str | None = None               # semantic key (graph)
    description: str = ""

    def json_schema(self, nullable: bool | None = None) -> dict:
        """JSON Schema of a value of this field (``nullable`` overrides the field's own)."""
        s: dict[str, Any]
        if self.type == "string":
            s = {"type": "string", "maxLength": self.max_length or STRING_MAX}
        elif self.type == "integer":
            s = {"type": "integer"}
        elif self.type == "number":
            s = {"type": "number"}
        elif self.type == "boolean":
            s = {"type": "boolean"}
        elif self.type == "date":
            s = {"type": "string", "format": "date"}
        elif self.type == "datetime":
            s = {"type": "string", "format": "date-time"}
        else:
            s = {"type": "string", "enum": list(self.values or [])}
        if self.type in ("integer", "number"):
            if self.min is not None:
                s["minimum"] = self.min
            if self.max is not None:
                s["maximum"] = self.max
        if self.description:
            s["description"] = self.description
        if self.nullable if nullable is None else nullable:
            s["type"] = [s["type"], "null"]
            if "enum" in s:
                s["enum"] = s["enum"] + [None]
        return s


@dataclass
class Entity:
    name: str
    primary_key: str
    fields: dict[str, Field]
    description: str = ""
    id_prefix: str | None = None

    @property
    def pk(self) -> Field:
        return self.fields[self.primary_key]

    def row_schema(self) -> dict:
        return {"type": "object",
                "properties": {n: f.json_schema() for n, f in self.fields.items()},
                "required": list(self.fields), "additionalProperties": False}


@dataclass
class Param:
    name: str
    schema: dict                      # JSON Schema of the value
    required: bool = True
    field: tuple[str, str] | None = None   # the (entity, field) the value belongs to
    key: str | None = None            # semantic key (graph); None for free values
    description: str = ""


@dataclass
class Tool:
    name: str
    kind: str
    mode: str                         # "read" / "write"
    description: str
    entity: str | None
    params: dict[str, Param]
    returns: dict
    pre: list[C.Condition]
    post: list[C.Condition]
    options: dict                     # kind-specific settings (by, fields, from, to, set, op, hook, ...)
    provides: set[str] = dc_field(default_factory=set)

    @property
    def parameters_schema(self) -> dict:
        """The JSON Schema of the arguments object."""
        props = {}
        for p in self.params.values():
            s = dict(p.schema)
            if p.description:
                s["description"] = p.description
            props[p.name] = s
        return {"type": "object", "properties": props,
                "required": [p.name for p in self.params.values() if p.required],
                "additionalProperties": False}

    def expand(self) -> dict:
        """The full tool definition as JSON-able data (``requires`` here ignores the domain's
        user-held keys; ``Domain.expand`` applies them)."""
        return {"name": self.name, "kind": self.kind, "mode": self.mode, "entity": self.entity,
                "description": self.description, "parameters": self.parameters_schema,
                "returns": self.returns,
                "preconditions": [{"cond": C.to_text(c.node), "message": c.message} for c in self.pre],
                "postconditions": [{"cond": C.to_text(c.node), "message": c.message} for c in self.post],
                "requires": sorted(self.requires(set())), "provides": sorted(self.provides),
                "options": _jsonable(self.options)}

    def requires(self, user_held: set[str]) -> set[str]:
        return {p.key for p in self.params.values() if p.required and p.key and p.key not in user_held}


@dataclass
class Domain:
    name: str
    description: str
    entities: dict[str, Entity]
    tools: dict[str, Tool]
    user_held: set[str]
    now: str
    source: str
    hooks: str | None = None
    policy: str = ""
    invariants: list = dc_field(default_factory=list)   # invariants.Same / Sum / NullWhen / Past

    def entity(self, name: str) -> Entity:
        try:
            return self.entities[name]
        except KeyError:
            raise KeyError(f"domain {self.name!r} has no entity {name!r}") from None

    def tool(self, name: str) -> Tool:
        try:
            return self.tools[name]
        except KeyError:
            raise KeyError(f"domain {self.name!r} has no tool {name!r}") from None

    def keys(self) -> set[str]:
        return {f.key for e in self.entities.values() for f in e.fields.values() if f.key}

    def entity_order(self) -> list[str]:
        """Entities ordered so that every referenced entity comes first (self references aside)."""
        order, seen = [], set()

        def visit(n, stack=()):
            if n in seen:
                return
            for f in self.entities[n].fields.values():
                if f.ref and f.ref[0] != n and f.ref[0] not in stack:
                    visit(f.ref[0], stack + (n,))
            seen.add(n)
            order.append(n)
        for n in self.entities:
            visit(n)
        return order

    def expand(self) -> dict:
        """The whole domain as JSON-able data: entities with field types, every tool in full."""
        ents = {}
        for e in self.entities.values():
            ents[e.name] = {"description": e.description, "primary_key": e.primary_key,
                            "id_prefix": e.id_prefix,
                            "fields": {f.name: _jsonable({k: v for k, v in vars(f).items()
                                                          if k not in ("name", "entity", "has_default")})
                                       for f in e.fields.values()}}
        return {"domain": self.name, "description": self.description, "now": self.now,
                "policy": self.policy, "hooks": self.hooks,
                "user_held": sorted(self.user_held), "entities": ents,
                "tools": [dict(t.expand(), requires=sorted(t.requires(self.user_held)))
                          for t in self.tools.values()]}


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        items = [_jsonable(x) for x in v]
        return sorted(items, key=str) if isinstance(v, set) else items
    return v


# ------------------------------------------------------------------------------------- loading
def domains_dir() -> Path:
    """Where the domain files live: $LONGCAT_ENVS_DIR, else ``envs/`` of the source tree (a
    checkout or an editable install), else the copy installed with the package
    (``longcat/data/envs``, see CMakeLists.txt)."""
    env = os.environ.get("LONGCAT_ENVS_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    source = here.parents[3] / "envs"
    if source.is_dir() and (here.parents[3] / "pyproject.toml").is_file():
        return source
    return here.parents[1] / "data" / "envs"


def domain_names(directory: str | Path | None = None) -> list[str]:
    d = Path(directory) if directory else domains_dir()
    if not d.is_dir():
        raise FileNotFoundError(f"domain folder {str(d)!r} does not exist (set LONGCAT_ENVS_DIR)")
    return sorted(p.stem for p in d.glob("*.yaml"))


_CACHE: dict[tuple[str, float], Domain] = {}


def parse_domains(value: str) -> list[str]:
    """``all`` or a comma-separated list of domain names; unknown names raise ValueError."""
    known = domain_names()
    if value == "all":
        return known
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"--domains: unknown domain(s) {unknown or value!r}; known: {', '.join(known)}")
    return names


def load_domain(name_or_path: str | Path) -> Domain:
    """Loads and validates one domain: a name under ``domains_dir()`` or a path to a YAML file.
    Parsed domains are cached by (path, modification time)."""
    import yaml

    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        if not _NAME.match(str(name_or_path)):
            raise SpecError(str(name_or_path), "", "a domain name is lower case letters, digits and '_'")
        p = domains_dir() / f"{name_or_path}.yaml"
    if not p.is_file():
        known = ", ".join(domain_names(p.parent)) if p.parent.is_dir() else "none"
        raise FileNotFoundError(f"domain file {str(p)!r} not found (known domains: {known})")
    ck = (str(p.resolve()), p.stat().st_mtime)
    if ck in _CACHE:
        return _CACHE[ck]
    try:
        doc = yaml.load(p.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise SpecError(str(p), "", f"not valid YAML: {e}") from None
    dom = parse_domain(doc, str(p), expect_name=p.stem)
    _CACHE[ck] = dom
    return dom


def load_all(names: list[str] | None = None) -> list[Domain]:
    return [load_domain(n) for n in (names or domain_names())]


class _Ctx:
    def __init__(self, source: str):
        self.source = source

    def err(self, path: str, problem: str):
        raise SpecError(self.source, path, problem)

    def mapping(self, v, path, what="a mapping"):
        if not isinstance(v, dict):
            self.err(path, f"expected {what}, got {type(v).__name__}")
        return v

    def lst(self, v, path, what="a list"):
        if not isinstance(v, list):
            self.err(path, f"expected {what}, got {type(v).__name__}")
        return v

    def string(self, v, path, what="a string"):
        if not isinstance(v, str):
            self.err(path, f"expected {what}, got {type(v).__name__} {v!r}")
        return v

    def keys(self, d: dict, allowed: set, path: str):
        extra = sorted(set(map(str, d)) - allowed)
        if extra:
            self.err(path, f"unknown key(s) {extra}; allowed: {sorted(allowed)}")


_FIELD_KEYS = {"type", "nullable", "unique", "values", "ref", "default", "min", "max", "max_length",
               "faker", "key", "description"}


def _check_value(ctx: _Ctx, f: Field, v, path: str):
    """A literal (default, set value, enum literal) must fit the field's type."""
    if v is None:
        if not f.nullable:
            ctx.err(path, f"null given but field {f.entity}.{f.name} is not nullable")
        return
    ok = {"string": lambda x: isinstance(x, str), "integer": lambda x: isinstance(x, int) and not isinstance(x, bool),
          "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
          "boolean": lambda x: isinstance(x, bool), "date": _is_date, "datetime": _is_datetime,
          "enum": lambda x: x in (f.values or [])}[f.type](v)
    if not ok:
        want = f"one of {f.values}" if f.type == "enum" else f"a {f.type}"
        ctx.err(path, f"value {v!r} is not {want} (field {f.entity}.{f.name})")


def _is_date(v) -> bool:
    if isinstance(v, date) and not isinstance(v, datetime):
        return True
    if not isinstance(v, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        return False
    try:
        date.fromisoformat(v)
        return True
    except ValueError:
        return False


def _is_datetime(v) -> bool:
    if isinstance(v, datetime):
        return True
    if not isinstance(v, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", v):
        return False
    try:
        datetime.fromisoformat(v)
        return True
    except ValueError:
        return False


def _norm_yaml_value(v):
    # YAML turns unquoted dates into date objects; the database stores ISO text
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(v, date):
        return v.isoformat()
    return v


def _parse_entities(ctx: _Ctx, doc: dict) -> dict[str, Entity]:
    ents_doc = ctx.mapping(doc.get("entities"), "entities", "a mapping of entities")
    if not ents_doc:
        ctx.err("entities", "a domain needs at least one entity")
    ents: dict[str, Entity] = {}
    for en, ed in ents_doc.items():
        ep = f"entities.{en}"
        if not isinstance(en, str) or not _NAME.match(en):
            ctx.err(ep, "entity names are lower case letters, digits and '_' (start with a letter)")
        ctx.mapping(ed, ep)
        ctx.keys(ed, {"description", "primary_key", "fields", "id_prefix"}, ep)
        fd = ctx.mapping(ed.get("fields"), f"{ep}.fields", "a mapping of fields")
        if not fd:
            ctx.err(f"{ep}.fields", "an entity needs at least one field")
        fields: dict[str, Field] = {}
        for fn, spec in fd.items():
            fp = f"{ep}.fields.{fn}"
            if not isinstance(fn, str) or not _NAME.match(fn):
                ctx.err(fp, "field names are lower case letters, digits and '_' (start with a letter)")
            if isinstance(spec, str):
                spec = {"type": spec}
            ctx.mapping(spec, fp)
            ctx.keys(spec, _FIELD_KEYS, fp)
            t = spec.get("type")
            if t not in TYPES:
                ctx.err(f"{fp}.type", f"unknown type {t!r}; expected one of {list(TYPES)}")
            f = Field(name=fn, type=t, entity=en, nullable=bool(spec.get("nullable", False)),
                      unique=bool(spec.get("unique", False)), description=str(spec.get("description", "")),
                      faker=spec.get("faker"), key=spec.get("key"))
            if t == "enum":
                vals = ctx.lst(spec.get("values"), f"{fp}.values", "a list of enum values")
                if not vals or not all(isinstance(v, str) for v in vals):
                    ctx.err(f"{fp}.values", "an enum needs a non-empty list of string values")
                if len(set(vals)) != len(vals):
                    ctx.err(f"{fp}.values", "enum values repeat")
                f.values = list(vals)
            elif "values" in spec:
                ctx.err(f"{fp}.values", f"only enum fields have values (type is {t})")
            for b in ("min", "max"):
                if b in spec:
                    if t not in ("integer", "number") or isinstance(spec[b], bool) or not isinstance(spec[b], (int, float)):
                        ctx.err(f"{fp}.{b}", f"{b} needs a numeric field and a number (type {t}, got {spec[b]!r})")
                    setattr(f, b, spec[b])
            if "max_length" in spec:
                if t != "string" or not isinstance(spec["max_length"], int) or spec["max_length"] < 1:
                    ctx.err(f"{fp}.max_length", "max_length needs a string field and a positive integer")
                f.max_length = spec["max_length"]
            if "ref" in spec:
                r = spec["ref"]
                if not isinstance(r, str) or r.count(".") != 1:
                    ctx.err(f"{fp}.ref", f"a foreign key is written Entity.field, got {r!r}")
                f.ref = tuple(r.split("."))
            if f.key is not None and (not isinstance(f.key, str) or not _NAME.match(f.key)):
                ctx.err(f"{fp}.key", f"a semantic key is a lower-case name, got {f.key!r}")
            if f.faker is not None and not isinstance(f.faker, str):
                ctx.err(f"{fp}.faker", f"a Faker provider name is a string, got {f.faker!r}")
            fields[fn] = f
            if "default" in spec:
                f.default, f.has_default = _norm_yaml_value(spec["default"]), True
                _check_value(ctx, f, f.default, f"{fp}.default")
        pk = ed.get("primary_key", next(iter(fields)))
        if pk not in fields:
            ctx.err(f"{ep}.primary_key", f"primary key {pk!r} is not a field of {en} (fields: {list(fields)})")
        pkf = fields[pk]
        if pkf.type not in ("string", "integer"):
            ctx.err(f"{ep}.fields.{pk}", f"a primary key is a string or integer, got {pkf.type}")
        if pkf.nullable:
            ctx.err(f"{ep}.fields.{pk}", "a primary key cannot be nullable")
        prefix = ed.get("id_prefix")
        if prefix is not None and (not isinstance(prefix, str) or pkf.type != "string"):
            ctx.err(f"{ep}.id_prefix", "id_prefix is a string, for a string primary key")
        ents[en] = Entity(en, pk, fields, str(ed.get("description", "")), prefix)
    # keys and references, once every entity is known
    for e in ents.values():
        if e.pk.key is None:
            e.pk.key = f"{e.name}_id" if e.primary_key == "id" else e.primary_key
    for e in ents.values():
        for f in e.fields.values():
            if f.ref is None:
                continue
            fp = f"entities.{e.name}.fields.{f.name}.ref"
            re_, rf = f.ref
            if re_ not in ents:
                ctx.err(fp, f"dangling foreign key: entity {re_!r} does not exist (entities: {list(ents)})")
            target = ents[re_].fields.get(rf)
            if target is None:
                ctx.err(fp, f"dangling foreign key: {re_} has no field {rf!r}")
            if not (rf == ents[re_].primary_key or target.unique):
                ctx.err(fp, f"a foreign key must reference a primary key or unique field; {re_}.{rf} is neither")
            if target.type != f.type:
                ctx.err(fp, f"type {f.type} differs from the referenced {re_}.{rf} ({target.type})")
            if f.key is None:
                f.key = target.key
    return ents


def _cond_list(ctx: _Ctx, v, path) -> list[tuple[str, str | None, str]]:
    if v is None:
        return []
    out = []
    for i, c in enumerate(ctx.lst(v, path, "a list of conditions")):
        p = f"{path}[{i}]"
        if isinstance(c, dict):
            ctx.keys(c, {"cond", "message"}, p)
            out.append((ctx.string(c.get("cond"), f"{p}.cond", "a condition string"), c.get("message"), p))
        else:
            out.append((ctx.string(c, p, "a condition string or {cond, message}"), None, p))
    return out


def parse_domain(doc: Any, source: str = "<spec>", expect_name: str | None = None) -> Domain:
    """Builds a Domain from a parsed YAML document; raises ``SpecError`` on any problem."""
    ctx = _Ctx(source)
    ctx.mapping(doc, "", "a mapping at the top level")
    ctx.keys(doc, {"domain", "description", "now", "hooks", "user_held", "entities", "tools", "policy",
                   "invariants"}, "")
    name = doc.get("domain")
    if not isinstance(name, str) or not _NAME.match(name):
        ctx.err("domain", f"expected a lower-case domain name, got {name!r}")
    if expect_name and name != expect_name:
        ctx.err("domain", f"domain {name!r} differs from its file name {expect_name!r}")
    now = _norm_yaml_value(doc.get("now", "2025-01-01T12:00:00"))
    if not _is_datetime(now):
        ctx.err("now", f"expected an ISO datetime YYYY-MM-DDTHH:MM:SS, got {now!r}")
    ents = _parse_entities(ctx, doc)
    dom = Domain(name=name, description=str(doc.get("description", "")), entities=ents, tools={},
                 user_held=set(), now=now, source=source, hooks=doc.get("hooks"),
                 policy=str(doc.get("policy", "")))
    from .invariants import parse_invariants

    dom.invariants = parse_invariants(dom, doc.get("invariants"), ctx.err)
    keys = dom.keys()
    for i, k in enumerate(ctx.lst(doc.get("user_held", []), "user_held", "a list of semantic keys")):
        if k not in keys:
            ctx.err(f"user_held[{i}]", f"{k!r} is not a semantic key of this domain (keys: {sorted(keys)})")
        dom.user_held.add(k)
    if dom.hooks is not None:
        if not isinstance(dom.hooks, str):
            ctx.err("hooks", "expected a module name")
        try:
            importlib.import_module(dom.hooks)
        except ImportError as e:
            ctx.err("hooks", f"cannot import hook module {dom.hooks!r}: {e}")
    tools_doc = ctx.lst(doc.get("tools"), "tools", "a list of tools")
    if not tools_doc:
        ctx.err("tools", "a domain needs at least one tool")
    for i, td in enumerate(tools_doc):
        path = f"tools[{i}]"
        ctx.mapping(td, path)
        tname = td.get("name")
        if isinstance(tname, str):
            path = f"tools[{i}] ({tname})"
        tool = _build_tool(ctx, dom, td, path)
        if tool.name in dom.tools:
            ctx.err(f"{path}.name", f"duplicate tool name {tool.name!r}")
        dom.tools[tool.name] = tool
    return dom


# ---------------------------------------------------------------------------------- tool kinds
_TOOL_KEYS = {"name", "kind", "entity", "description", "params", "pre", "post", "returns", "mode",
              "by", "optional", "fields", "from", "to", "field", "set", "op", "hook", "min", "max", "limit"}
_KIND_KEYS = {
    "get": set(), "find_by": {"by"}, "list_by": {"by", "optional", "limit"}, "search": {"fields", "limit"},
    "count": {"by"}, "aggregate": {"op", "field", "by"}, "create": {"fields", "optional", "set"},
    "update_fields": {"fields", "set"}, "set_status": {"field", "from", "to", "set"},
    "cancel": {"field", "from", "to", "set"}, "delete": set(), "adjust": {"field", "min", "max", "set"},
    "custom": {"hook", "mode", "returns"},
}
_PARAM_KEYS = _FIELD_KEYS | {"required", "field"}


def _param_for_field(f: Field, name: str | None = None, required: bool = True, nullable: bool = False) -> Param:
    return Param(name or f.name, f.json_schema(nullable=nullable), required, (f.entity, f.name), f.key,
                 f.description)


def _pk_param(e: Entity) -> Param:
    f = e.pk
    name = f"{e.name}_id" if f.name == "id" else f.name
    return Param(name, f.json_schema(), True, (e.name, f.name), f.key,
                 f.description or f"The {e.name}'s {f.name}.")


def _fields_opt(ctx, dom, e, td, key, path, required=True) -> list[str]:
    v = td.get(key)
    if v is None:
        if required:
            ctx.err(f"{path}.{key}", f"kind {td.get('kind')} needs {key}: a list of fields of {e.name}")
        return []
    names = ctx.lst(v, f"{path}.{key}", "a list of field names")
    for j, fn in enumerate(names):
        if fn not in e.fields:
            ctx.err(f"{path}.{key}[{j}]", f"{e.name} has no field {fn!r} (fields: {list(e.fields)})")
    if len(set(names)) != len(names):
        ctx.err(f"{path}.{key}", "fields repeat")
    return list(names)


def _fk_pre(f: Field, pname: str, optional: bool = False) -> dict | None:
    """Precondition that a foreign-key argument names an existing row."""
    if f.ref is None:
        return None
    c = f"exists({f.ref[0]}, {f.ref[1]}=${pname})"
    return {"cond": f"${pname} == null or {c}" if optional else c,
            "message": f"{f.ref[0]} ${pname} not found"}


def _build_tool(ctx: _Ctx, dom: Domain, td: dict, path: str) -> Tool:
    ctx.keys(td, _TOOL_KEYS, path)
    name = td.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        ctx.err(f"{path}.name", f"a tool name matches [A-Za-z][A-Za-z0-9_-]{{0,63}}, got {name!r}")
    kind = td.get("kind")
    if kind not in KINDS:
        ctx.err(f"{path}.kind", f"unknown kind {kind!r}; expected one of {list(KINDS)}")
    extra = {k for k in td if k in _TOOL_KEYS - {"name", "kind", "entity", "description", "params", "pre",
                                                   "post", "returns", "mode"}} - _KIND_KEYS[kind]
    if extra:
        ctx.err(path, f"kind {kind} does not take {sorted(extra)}")
    if kind == "custom" and "mode" not in td:
        ctx.err(f"{path}.mode", "a custom tool declares mode: read or write")
    if "mode" in td and kind != "custom":
        ctx.err(f"{path}.mode", f"mode is implied by kind {kind}; only custom tools declare it")
    desc = td.get("description")
    if not isinstance(desc, str) or not desc.strip():
        ctx.err(f"{path}.description", "every tool needs a description")
    ename = td.get("entity")
    e = None
    if ename is not None or kind != "custom":
        if ename not in dom.entities:
            ctx.err(f"{path}.entity", f"unknown entity {ename!r} (entities: {list(dom.entities)})")
        e = dom.entities[ename]
    mode = td.get("mode", "write" if kind in WRITE_KINDS else "read")
    if mode not in ("read", "write"):
        ctx.err(f"{path}.mode", f"mode is read or write, got {mode!r}")
    params: dict[str, Param] = {}
    pre: list[str] = []
    post: list[str] = []
    opts: dict[str, Any] = {}
    provides: set[str] = set()
    returns: dict = {}
    row_keys = {f.key for f in e.fields.values() if f.key} if e else set()

    def add(p: Param):
        params[p.name] = p

    if kind in ("get", "update_fields", "set_status", "cancel", "delete", "adjust"):
        pkp = _pk_param(e)
        add(pkp)
        opts["key_param"] = pkp.name
        pre.append({"cond": f"exists({e.name}, {e.primary_key}=${pkp.name})",
                    "message": f"{e.name} ${pkp.name} not found"})
    if kind == "get":
        returns, provides = e.row_schema(), row_keys
    elif kind in ("find_by", "list_by", "count"):
        by = _fields_opt(ctx, dom, e, td, "by", path)
        if not by:
            ctx.err(f"{path}.by", "needs at least one field")
        opts["by"] = by
        for fn in by:
            add(_param_for_field(e.fields[fn]))
        if kind == "find_by":
            pre.append({"cond": f"exists({e.name}, " + ", ".join(f"{fn}=${fn}" for fn in by) + ")",
                        "message": f"no {e.name} with " + ", ".join(f"{fn} ${fn}" for fn in by)})
            returns, provides = e.row_schema(), row_keys
        else:
            for fn in by:
                c = _fk_pre(e.fields[fn], fn)
                if c:
                    pre.append(c)
            if kind == "list_by":
                opt = _fields_opt(ctx, dom, e, td, "optional", path, required=False)
                overlap = set(opt) & set(by)
                if overlap:
                    ctx.err(f"{path}.optional", f"fields {sorted(overlap)} are already in by")
                opts["optional"] = opt
                for fn in opt:
                    add(_param_for_field(e.fields[fn], required=False))
                opts["limit"] = _limit(ctx, td, path)
                add(Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, False,
                          description=f"Most rows to return (default {opts['limit']})."))
                returns, provides = {"type": "array", "items": e.row_schema()}, row_keys
            else:
                returns = {"type": "object", "properties": {"count": {"type": "integer"}},
                           "required": ["count"], "additionalProperties": False}
    elif kind == "search":
        fs = _fields_opt(ctx, dom, e, td, "fields", path)
        opts["fields"] = fs
        for fn in fs:
            add(_param_for_field(e.fields[fn], required=False))
        opts["limit"] = _limit(ctx, td, path)
        add(Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, False,
                  description=f"Most rows to return (default {opts['limit']})."))
        returns, provides = {"type": "array", "items": e.row_schema()}, row_keys
    elif kind == "aggregate":
        op = td.get("op")
        if op not in ("sum", "avg", "min", "max"):
            ctx.err(f"{path}.op", f"op is sum, avg, min or max, got {op!r}")
        fn = td.get("field")
        if fn not in e.fields or e.fields[fn].type not in ("integer", "number"):
            ctx.err(f"{path}.field", f"needs a numeric field of {e.name}, got {fn!r}")
        by = _fields_opt(ctx, dom, e, td, "by", path, required=False)
        opts.update(op=op, field=fn, by=by)
        for b in by:
            add(_param_for_field(e.fields[b]))
            c = _fk_pre(e.fields[b], b)
            if c:
                pre.append(c)
        returns = {"type": "object", "properties": {"value": {"type": ["number", "null"]}},
                   "required": ["value"], "additionalProperties": False}
    elif kind == "create":
        fs = _fields_opt(ctx, dom, e, td, "fields", path)
        opt = _fields_opt(ctx, dom, e, td, "optional", path, required=False)
        if e.primary_key in fs:
            ctx.err(f"{path}.fields", f"the primary key {e.primary_key} is generated, not a parameter")
        bad = set(opt) - set(fs)
        if bad:
            ctx.err(f"{path}.optional", f"optional fields {sorted(bad)} are not in fields")
        opts["fields"], opts["optional"] = fs, opt
        for fn in fs:
            f = e.fields[fn]
            add(_param_for_field(f, required=fn not in opt, nullable=f.nullable))
            c = _fk_pre(f, fn, optional=fn in opt or f.nullable)
            if c:
                pre.append(c)
            if f.unique:
                pre.append({"cond": f"not exists({e.name}, {fn}=${fn})",
                            "message": f"another {e.name} already has {fn} ${fn}"})
        pk = e.primary_key
        post.append(f"exists({e.name}, {pk}=$result.{pk})")
        post.append(f"count({e.name}) == before.count({e.name}) + 1")
        for fn in fs:
            c = f"field({e.name}, $result.{pk}, {fn}) == ${fn}"
            post.append(c if fn not in opt else f"${fn} == null or {c}")
        returns, provides = e.row_schema(), row_keys
    elif kind == "update_fields":
        fs = _fields_opt(ctx, dom, e, td, "fields", path)
        if e.primary_key in fs:
            ctx.err(f"{path}.fields", "the primary key cannot be updated")
        if not fs and not td.get("set"):
            ctx.err(f"{path}.fields", "update_fields needs fields or set (it would change nothing)")
        opts["fields"] = fs
        kp = opts["key_param"]
        for fn in fs:
            f = e.fields[fn]
            add(_param_for_field(f, nullable=f.nullable))
            c = _fk_pre(f, fn, optional=f.nullable)
            if c:
                pre.append(c)
            if f.unique:
                pre.append({"cond": f"not exists({e.name}, {fn}=${fn}) or field({e.name}, ${kp}, {fn}) == ${fn}",
                            "message": f"another {e.name} already has {fn} ${fn}"})
            post.append(f"field({e.name}, ${kp}, {fn}) == ${fn}")
        returns, provides = e.row_schema(), row_keys
    elif kind in ("set_status", "cancel"):
        fn = td.get("field", "status")
        if fn not in e.fields or e.fields[fn].type != "enum":
            ctx.err(f"{path}.field", f"needs an enum field of {e.name}, got {fn!r}")
        f = e.fields[fn]
        to = td.get("to", "cancelled" if kind == "cancel" else None)
        if to not in f.values:
            ctx.err(f"{path}.to", f"{to!r} is not a value of {e.name}.{fn} ({f.values})")
        frm = td.get("from")
        if frm is None:
            frm = [v for v in f.values if v != to]
        ctx.lst(frm, f"{path}.from", "a list of states")
        for j, v in enumerate(frm):
            if v not in f.values:
                ctx.err(f"{path}.from[{j}]", f"{v!r} is not a value of {e.name}.{fn} ({f.values})")
        if not frm:
            ctx.err(f"{path}.from", "needs at least one state")
        opts.update(field=fn, to=to)
        opts["from"] = list(frm)
        kp = opts["key_param"]
        pre.append(f"field({e.name}, ${kp}, {fn}) in [" + ", ".join(C._lit_text(v) for v in frm) + "]")
        post.append(f"field({e.name}, ${kp}, {fn}) == {C._lit_text(to)}")
        returns, provides = e.row_schema(), row_keys
    elif kind == "delete":
        kp = opts["key_param"]
        for other in dom.entities.values():
            for rf in other.fields.values():
                if rf.ref and rf.ref[0] == e.name:   # self references too (a manager of employees)
                    key_field = rf.ref[1]
                    val = f"${kp}" if key_field == e.primary_key else f"field({e.name}, ${kp}, {key_field})"
                    pre.append({"cond": f"not exists({other.name}, {rf.name}={val})",
                                "message": f"{e.name} is still referenced by {other.name} rows"})
        post.append(f"not exists({e.name}, {e.primary_key}=${kp})")
        post.append(f"count({e.name}) == before.count({e.name}) - 1")
        returns = {"type": "object", "properties": {"deleted": e.pk.json_schema()},
                   "required": ["deleted"], "additionalProperties": False}
    elif kind == "adjust":
        fn = td.get("field")
        if fn not in e.fields or e.fields[fn].type not in ("integer", "number"):
            ctx.err(f"{path}.field", f"needs a numeric field of {e.name}, got {fn!r}")
        f = e.fields[fn]
        lo = td.get("min", f.min if f.min is not None else None)
        hi = td.get("max", f.max)
        opts.update(field=fn, min=lo, max=hi)
        kp = opts["key_param"]
        add(Param("amount", {"type": f.type}, True,
                  description=f"Amount added to {fn} (negative to subtract)."))
        if lo is not None:
            pre.append({"cond": f"field({e.name}, ${kp}, {fn}) + $amount >= {lo!r}",
                        "message": f"{fn} would fall below {lo!r}"})
        if hi is not None:
            pre.append({"cond": f"field({e.name}, ${kp}, {fn}) + $amount <= {hi!r}",
                        "message": f"{fn} would exceed {hi!r}"})
        post.append(f"field({e.name}, ${kp}, {fn}) == before.field({e.name}, ${kp}, {fn}) + $amount")
        returns, provides = e.row_schema(), row_keys
    elif kind == "custom":
        hook = td.get("hook")
        if not isinstance(hook, str) or not hook:
            ctx.err(f"{path}.hook", "a custom tool names its hook")
        from .registry import HOOKS
        if hook not in HOOKS:
            ctx.err(f"{path}.hook", f"hook {hook!r} is not registered (register it with "
                                    f"longcat.envs.registry.register_hook in the module named by 'hooks:')")
        opts["hook"] = hook
        if e is not None:
            returns, provides = e.row_schema(), row_keys
        else:
            returns = {"type": "object"}
    # set: extra assignments of a write
    if "set" in td:
        sets = ctx.mapping(td["set"], f"{path}.set")
        for fn, v in sets.items():
            if fn not in e.fields:
                ctx.err(f"{path}.set.{fn}", f"{e.name} has no field {fn!r}")
            if fn == e.primary_key:
                ctx.err(f"{path}.set.{fn}", "the primary key cannot be set")
        opts["set"] = {k: _norm_yaml_value(v) for k, v in sets.items()}
    # explicit params override / add
    for pn, ps in ctx.mapping(td.get("params", {}) or {}, f"{path}.params").items():
        pp = f"{path}.params.{pn}"
        if not isinstance(pn, str) or not _NAME.match(pn):
            ctx.err(pp, "parameter names are lower case letters, digits and '_'")
        if isinstance(ps, str):
            ps = {"type": ps}
        ctx.mapping(ps, pp)
        ctx.keys(ps, _PARAM_KEYS, pp)
        if "field" in ps:
            ref = ps["field"]
            if not isinstance(ref, str) or ref.count(".") != 1:
                ctx.err(f"{pp}.field", f"expected Entity.field, got {ref!r}")
            en, fn = ref.split(".")
            if en not in dom.entities or fn not in dom.entities[en].fields:
                ctx.err(f"{pp}.field", f"unknown field {ref!r}")
            base = dom.entities[en].fields[fn]
            over = {k: v for k, v in ps.items() if k in _FIELD_KEYS}
            if over:
                spec = dict(type=base.type, values=base.values, nullable=base.nullable, min=base.min,
                            max=base.max, max_length=base.max_length, key=base.key,
                            description=base.description)
                spec.update(over)
                pf = _field_from(ctx, spec, pp, en)
                pf.name = fn
            else:
                pf = base
            p = Param(pn, pf.json_schema(), bool(ps.get("required", True)), (en, fn), pf.key,
                      str(ps.get("description", pf.description)))
        else:
            pf = _field_from(ctx, ps, pp, "<param>")
            p = Param(pn, pf.json_schema(), bool(ps.get("required", True)), None, pf.key,
                      str(ps.get("description", "")))
        add(p)
    if "returns" in td:
        if kind != "custom":
            ctx.err(f"{path}.returns", "only custom tools declare returns")
        returns = ctx.mapping(td["returns"], f"{path}.returns", "a JSON Schema")
    # set values that name parameters must name existing ones and fit the field
    for fn, v in opts.get("set", {}).items():
        f = e.fields[fn]
        if isinstance(v, str) and v.startswith("$"):
            if v == "$now":
                if f.type not in ("datetime", "date", "string"):
                    ctx.err(f"{path}.set.{fn}", f"$now needs a datetime/date/string field, {fn} is {f.type}")
            elif v[1:] not in params:
                ctx.err(f"{path}.set.{fn}", f"unknown parameter {v!r} (parameters: {list(params)})")
        else:
            _check_value(ctx, f, v, f"{path}.set.{fn}")
    # every assignment of `set` is checked after the write
    if "set" in opts and mode == "write" and kind != "custom":
        target = f"$result.{e.primary_key}" if kind == "create" else f"${opts.get('key_param')}"
        for fn, v in opts["set"].items():
            if v == "$now":
                if e.fields[fn].type == "date":
                    continue
                rhs = "$now"
            elif isinstance(v, str) and v.startswith("$"):
                rhs = v
            else:
                rhs = C._lit_text(v)
            post.append(f"field({e.name}, {target}, {fn}) == {rhs}")
    if kind == "create":
        for f in e.fields.values():
            if (f.name != e.primary_key and f.name not in opts["fields"] and f.name not in opts.get("set", {})
                    and not f.has_default and not f.nullable):
                ctx.err(f"{path}.fields", f"field {e.name}.{f.name} gets no value (not a parameter, no set, "
                                          f"no default, not nullable)")
    # conditions
    pre_c = [_cond(ctx, dom, e, params, c, None, f"{path}.pre (generated)", "pre", returns) for c in pre]
    post_c = [_cond(ctx, dom, e, params, c, None, f"{path}.post (generated)", "post", returns) for c in post]
    for text, msg, cp in _cond_list(ctx, td.get("pre"), f"{path}.pre"):
        pre_c.append(_cond(ctx, dom, e, params, text, msg, cp, "pre", returns))
    for text, msg, cp in _cond_list(ctx, td.get("post"), f"{path}.post"):
        post_c.append(_cond(ctx, dom, e, params, text, msg, cp, "post", returns))
    return Tool(name=name, kind=kind, mode=mode, description=desc.strip(), entity=e.name if e else None,
                params=params, returns=returns, pre=pre_c, post=post_c, options=opts, provides=set(provides))


def _limit(ctx, td, path) -> int:
    lim = td.get("limit", DEFAULT_LIMIT)
    if not isinstance(lim, int) or isinstance(lim, bool) or not 1 <= lim <= MAX_LIMIT:
        ctx.err(f"{path}.limit", f"limit is an integer in [1, {MAX_LIMIT}], got {lim!r}")
    return lim


def _field_from(ctx: _Ctx, spec: dict, path: str, entity: str) -> Field:
    t = spec.get("type")
    if t not in TYPES:
        ctx.err(f"{path}.type", f"unknown type {t!r}; expected one of {list(TYPES)}")
    f = Field(name="", type=t, entity=entity, nullable=bool(spec.get("nullable") or False),
              values=spec.get("values"), min=spec.get("min"), max=spec.get("max"),
              max_length=spec.get("max_length"), key=spec.get("key"),
              description=str(spec.get("description") or ""))
    if t == "enum":
        if not isinstance(f.values, list) or not f.values or not all(isinstance(v, str) for v in f.values):
            ctx.err(f"{path}.values", "an enum needs a non-empty list of string values")
    return f


def _cond(ctx: _Ctx, dom: Domain, e: Entity | None, params: dict, cond, msg, path: str, phase: str,
          returns: dict) -> C.Condition:
    if isinstance(cond, dict):
        cond, msg = cond["cond"], cond.get("message")
    try:
        node = C.parse(cond)
    except C.ConditionSyntaxError as ex:
        ctx.err(path, f"bad condition: {ex}")
    refs = C.references(node)
    where = f"condition {cond!r}"
    for en in refs.entities:
        if en not in dom.entities:
            ctx.err(path, f"{where} names unknown entity {en!r} (entities: {list(dom.entities)})")
    for en, fn in refs.fields:
        if fn not in dom.entities[en].fields:
            ctx.err(path, f"{where} names unknown field {en}.{fn} (fields: {list(dom.entities[en].fields)})")
    for pn in refs.params:
        if pn not in params:
            ctx.err(path, f"{where} names unknown parameter ${pn} (parameters: {list(params)})")
    if phase == "pre":
        if refs.states:
            ctx.err(path, f"{where}: before./after. belong in postconditions")
        if refs.result_fields or refs.whole_result:
            ctx.err(path, f"{where}: $result is known only in postconditions")
    else:
        for c in C.before_calls(node):
            inner = C.references(_strip_when(c))
            if inner.result_fields or inner.whole_result:
                ctx.err(path, f"{where}: a before. call cannot use $result (the state before has no result)")
        if refs.result_fields:
            props = returns.get("properties") if returns.get("type") == "object" else None
            if props is None:
                ctx.err(path, f"{where} uses $result.<field> but {returns.get('type')!r} results have no fields")
            for rf in refs.result_fields:
                if rf not in props:
                    ctx.err(path, f"{where} names unknown result field {rf!r} (fields: {list(props)})")
    for en, fn, lit in C.enum_comparisons(node):
        f = dom.entities[en].fields[fn]
        if lit is None:
            continue
        if f.type == "enum" and lit not in f.values:
            ctx.err(path, f"{where}: {lit!r} is not a value of {en}.{fn} ({f.values})")
        fits = {"string": isinstance(lit, str), "date": isinstance(lit, str), "datetime": isinstance(lit, str),
                "enum": True, "boolean": isinstance(lit, bool),
                "integer": isinstance(lit, (int, float)) and not isinstance(lit, bool),
                "number": isinstance(lit, (int, float)) and not isinstance(lit, bool)}[f.type]
        if not fits:
            ctx.err(path, f"{where}: {C._lit_text(lit)} cannot equal {en}.{fn}, a {f.type} field")
    for n in C.walk(node):
        if isinstance(n, C.Call):
            for k, v in n.filters.items():
                if isinstance(v, C.ListLit):
                    ctx.err(path, f"{where}: filter {k}= takes one value, not a list (use 'in' with field())")
        if isinstance(n, C.Call) and n.fn == "sum":
            f = dom.entities[n.entity].fields[n.name]
            if f.type not in ("integer", "number"):
                ctx.err(path, f"{where}: sum over non-numeric field {n.entity}.{n.name}")
    return C.Condition(cond, node, msg)


def _strip_when(c: C.Call) -> C.Call:
    return C.Call(c.fn, None, c.entity, c.args, c.name, c.filters)
