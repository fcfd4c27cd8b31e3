"""Controlled environment growth over a tool dependency graph (the report's §3.1.1, MISSION.md §3).

The graph follows the contract of :func:`longcat.envs.graph.build_dependency_graph`: nodes are
tool names with attributes ``kind`` ("read"/"write"), ``requires`` (semantic keys the tool's
required parameters need) and ``provides`` (keys its output supplies); an edge u -> v means u
provides a key v requires. Tools with empty ``requires`` are entry points (their parameters are
user-held, e.g. an email the user knows).

One environment is grown in four steps, all driven by one ``random.Random`` (deterministic):

1. **Seed chain.** A chain is a sequence of tools, each of which has all its ``requires``
   provided by earlier tools of the chain (the first is an entry point) and, after the first,
   consumes at least one key of an earlier tool. Tools are drawn with weight
   ``(1 + uses[t]) ** -downweight`` (``uses`` counts how often a tool was in earlier chains of
   this run, so later environments cover the rest of the graph), write tools times
   ``write_bias``; a seed chain must contain a write tool (a task has to change the database).
2. **BFS expansion.** Layer by layer from the tools instantiated so far, a neighbour v is added
   only when every key in ``requires(v)`` is provided by tools already in the environment;
   ``bfs_depth`` layers at most, and never past ``max_tools``.
3. **Chain fusion.** With E_n the tools covered so far and D_n = G \\ E_n, another independent
   chain (sampled inside D_n only) is fused when ``p = f(c(E_n), g(D_n), |D_n|) > tau``:

   * ``c(E)`` structural complexity of the induced subgraph: mean out-degree plus
     ``depth_weight`` x its dependency depth (BFS layers from its sources);
   * ``g(D)`` the number of attempts the chain search needs to find a valid chain in D
     (``search_attempts + 1`` when it finds none);
   * ``f = sigmoid(bias + w_size * log(1 + |D|) - w_complexity * c - w_search * (g - 1))``:
     increasing in |D| (much unexplored graph: fuse), decreasing in c (already complex enough)
     and in g (chains are hard to find there). All weights and tau live in :class:`GrowthConfig`.
4. **Fallback.** While the environment has fewer than ``min_tools`` tools, random chains from
   the whole graph (which may overlap E) are added, each followed by BFS expansion.

Each decision is recorded in :class:`Growth.trace`, so ``envs stats`` can report it.
"""
from __future__ import annotations

import math
import random
import sqlite3
from dataclasses import dataclass, field
from typing import Iterable, Mapping, MutableMapping, Sequence

import networkx as nx


@dataclass
class GrowthConfig:
    """Knobs of controlled growth (see the module docstring for what each one does)."""

    min_tools: int = 20          # fallback chains until the environment has this many tools
    max_tools: int = 36          # BFS never grows past this
    chain_min: int = 2           # a chain has at least this many tools ...
    chain_max: int = 5           # ... and at most this many
    downweight: float = 1.0      # weight (1 + uses) ** -downweight
    write_bias: float = 2.0      # write tools drawn this much more often
    bfs_depth: int = 2           # BFS layers per expansion
    bfs_layer_cap: int = 6       # tools added per BFS layer at most (random, seeded)
    tau: float = 0.5             # fuse when p > tau
    bias: float = 0.0
    w_size: float = 0.6          # weight of log(1 + |D_n|)
    w_complexity: float = 0.3    # weight of c(E_n)
    w_search: float = 0.5        # weight of g(D_n) - 1
    depth_weight: float = 0.25   # in c: longest dependency path's weight
    search_attempts: int = 8     # chain-search budget for g
    max_chains: int = 4          # seed + fused chains at most (fallback chains not counted)
    fallback_attempts: int = 64  # random-chain tries before giving up on min_tools

    def __post_init__(self) -> None:
        for name in ("min_tools", "max_tools", "chain_min", "chain_max", "bfs_depth",
                     "search_attempts", "max_chains", "fallback_attempts"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"GrowthConfig.{name}: expected an integer >= 1, got {v!r}")
        if self.chain_min > self.chain_max:
            raise ValueError(f"GrowthConfig.chain_min: expected <= chain_max ({self.chain_max}), "
                             f"got {self.chain_min}")
        if self.min_tools > self.max_tools:
            raise ValueError(f"GrowthConfig.min_tools: expected <= max_tools ({self.max_tools}), "
                             f"got {self.min_tools}")


@dataclass
class Growth:
    """One grown environment: its tools in the order they were instantiated, the chains
    (seed first, then fused, then fallback), and a trace of every fusion decision."""

    tools: list[str]
    chains: list[list[str]]
    chain_kinds: list[str]                      # "seed" / "fused" / "fallback" per chain
    trace: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"tools": list(self.tools), "chains": [list(c) for c in self.chains],
                "chain_kinds": list(self.chain_kinds), "trace": list(self.trace)}


def _req(G: nx.DiGraph, t: str) -> set:
    return G.nodes[t].get("requires") or set()


def _prov(G: nx.DiGraph, t: str) -> set:
    return G.nodes[t].get("provides") or set()


def provided_keys(G: nx.DiGraph, tools: Iterable[str]) -> set:
    keys: set = set()
    for t in tools:
        keys |= _prov(G, t)
    return keys


def is_write(G: nx.DiGraph, t: str) -> bool:
    return G.nodes[t].get("kind") == "write"


def entry_points(G: nx.DiGraph, allowed: Iterable[str] | None = None) -> list[str]:
    nodes = G.nodes if allowed is None else allowed
    return sorted(t for t in nodes if not _req(G, t))


def _weight(G: nx.DiGraph, t: str, uses: Mapping[str, int], cfg: GrowthConfig) -> float:
    w = (1.0 + uses.get(t, 0)) ** (-cfg.downweight)
    return w * (cfg.write_bias if is_write(G, t) else 1.0)


def _pick(rng: random.Random, items: Sequence[str], weights: Sequence[float]) -> str:
    return rng.choices(items, weights=weights, k=1)[0]


def sample_chain(G: nx.DiGraph, rng: random.Random, uses: Mapping[str, int],
                 cfg: GrowthConfig, allowed: set | None = None,
                 require_write: bool = True) -> list[str] | None:
    """One attempt at a valid chain inside ``allowed`` (default: the whole graph); None when the
    attempt fails (no entry point, too short, or no write tool when ``require_write``)."""
    pool = set(G.nodes) if allowed is None else allowed
    entries = entry_points(G, pool)
    if not entries:
        return None
    target = rng.randint(cfg.chain_min, cfg.chain_max)
    first = _pick(rng, entries, [_weight(G, t, uses, cfg) for t in entries])
    chain = [first]
    keys = set(_prov(G, first))
    while len(chain) < target:
        cands = sorted({v for u in chain for v in G.successors(u)
                        if v in pool and v not in chain and _req(G, v) <= keys})
        if not cands:
            break
        nxt = _pick(rng, cands, [_weight(G, t, uses, cfg) for t in cands])
        chain.append(nxt)
        keys |= _prov(G, nxt)
        # A chain that already wrote stops early sometimes: writes end most real workflows.
        if is_write(G, nxt) and len(chain) >= cfg.chain_min and rng.random() < 0.5:
            break
    if len(chain) < cfg.chain_min:
        return None
    if require_write and not any(is_write(G, t) for t in chain):
        return None
    return chain


def find_chain(G: nx.DiGraph, rng: random.Random, uses: Mapping[str, int], cfg: GrowthConfig,
               allowed: set | None = None, require_write: bool = True,
               attempts: int | None = None) -> tuple[list[str] | None, int]:
    """Searches for a valid chain; returns (chain or None, attempts used). The attempt count is
    g(D) of the fusion rule: ``attempts + 1`` when no chain was found."""
    budget = cfg.search_attempts if attempts is None else attempts
    for i in range(1, budget + 1):
        chain = sample_chain(G, rng, uses, cfg, allowed, require_write)
        if chain is not None:
            return chain, i
    return None, budget + 1


def bfs_expand(G: nx.DiGraph, tools: list[str], rng: random.Random, cfg: GrowthConfig) -> list[str]:
    """BFS from ``tools``: each layer adds the neighbours whose requires are all provided by
    tools already instantiated (shuffled, at most ``bfs_layer_cap`` per layer, never past
    ``max_tools``). Returns the tools added, in order; ``tools`` is extended in place."""
    have = set(tools)
    keys = provided_keys(G, tools)
    added: list[str] = []
    frontier = list(tools)
    for _ in range(cfg.bfs_depth):
        cands = sorted({v for u in frontier for v in G.successors(u)
                        if v not in have and _req(G, v) <= keys})
        rng.shuffle(cands)
        layer = []
        for v in cands[:cfg.bfs_layer_cap]:
            if len(tools) >= cfg.max_tools:
                break
            tools.append(v)
            have.add(v)
            layer.append(v)
        if not layer:
            break
        # Keys of this layer become available only to the next layer (BFS order).
        keys |= provided_keys(G, layer)
        added += layer
        frontier = layer
    return added


def structural_complexity(G: nx.DiGraph, tools: Iterable[str], depth_weight: float = 0.25) -> float:
    """c(E): mean out-degree of the induced subgraph + depth_weight x its dependency depth (the
    most BFS layers from the subgraph's sources, i.e. tools with no predecessor inside it, to
    any tool; cycles are fine). Plain-dict code: it runs once per fusion decision."""
    E = set(tools)
    n = len(E)
    if n == 0:
        return 0.0
    succ = {u: [v for v in G.successors(u) if v in E] for u in E}
    edges = sum(len(v) for v in succ.values())
    has_pred = {v for vs in succ.values() for v in vs}
    frontier = [u for u in E if u not in has_pred] or [min(E)]
    seen = set(frontier)
    depth = 0
    while True:
        nxt = [v for u in frontier for v in succ[u] if v not in seen]
        if not nxt:
            break
        seen.update(nxt)
        frontier = nxt
        depth += 1
    return edges / n + depth_weight * depth


def fusion_probability(c: float, g: int, d_size: int, cfg: GrowthConfig) -> float:
    """p = f(c, g, |D|) = sigmoid(bias + w_size log(1+|D|) - w_complexity c - w_search (g-1))."""
    if d_size <= 0:
        return 0.0
    z = cfg.bias + cfg.w_size * math.log1p(d_size) - cfg.w_complexity * c \
        - cfg.w_search * (g - 1)
    return 1.0 / (1.0 + math.exp(-z))


def grow(G: nx.DiGraph, rng: random.Random, uses: MutableMapping[str, int] | None = None,
         cfg: GrowthConfig | None = None) -> Growth:
    """Grows one environment (seed chain, BFS, fusion, fallback) and updates ``uses``.

    Raises ValueError when the graph holds no valid seed chain at all (a spec problem: no entry
    point leads to a write tool)."""
    cfg = cfg or GrowthConfig()
    uses = {} if uses is None else uses
    seed, _ = find_chain(G, rng, uses, cfg, attempts=cfg.search_attempts * 4)
    if seed is None:
        raise ValueError(f"graph: no valid seed chain (entry point -> ... -> write tool) found in "
                         f"{cfg.search_attempts * 4} attempts over {G.number_of_nodes()} tools")
    tools = list(seed)
    growth = Growth(tools=tools, chains=[seed], chain_kinds=["seed"])
    for t in seed:
        uses[t] = uses.get(t, 0) + 1
    bfs_expand(G, tools, rng, cfg)

    while len(growth.chains) < cfg.max_chains and len(tools) < cfg.max_tools:
        rest = set(G.nodes) - set(tools)
        chain, g = find_chain(G, rng, uses, cfg, allowed=rest)
        c = structural_complexity(G, tools, cfg.depth_weight)
        p = fusion_probability(c, g, len(rest), cfg)
        fuse = chain is not None and p > cfg.tau
        growth.trace.append({"E": len(tools), "D": len(rest), "c": round(c, 4), "g": g,
                             "p": round(p, 4), "fused": fuse})
        if not fuse:
            break
        room = cfg.max_tools - len(tools)
        chain = chain[:room]
        growth.chains.append(chain)
        growth.chain_kinds.append("fused")
        for t in chain:
            uses[t] = uses.get(t, 0) + 1
        tools.extend(chain)
        bfs_expand(G, tools, rng, cfg)

    tries = 0
    while len(tools) < cfg.min_tools and tries < cfg.fallback_attempts:
        tries += 1
        chain = sample_chain(G, rng, uses, cfg, require_write=False)
        if chain is None or set(chain) <= set(tools):
            continue
        have = set(tools)
        new = [t for t in chain if t not in have]
        growth.chains.append(chain)
        growth.chain_kinds.append("fallback")
        for t in chain:
            uses[t] = uses.get(t, 0) + 1
        tools.extend(new)
        bfs_expand(G, tools, rng, cfg)
    return growth


def support_path(G: nx.DiGraph, tools: Sequence[str], target: str) -> list[str]:
    """A short executable path ending at ``target`` inside ``tools``: for each key it requires,
    the earliest instantiated provider (recursively), in instantiation order. Raises ValueError
    when some key has no provider among ``tools`` (the environment would not be executable)."""
    order = {t: i for i, t in enumerate(tools)}
    need: list[str] = []
    seen: set = set()

    def visit(t: str, stack: frozenset) -> None:
        if t in seen:
            return
        for key in sorted(_req(G, t)):
            provs = [u for u in tools if key in _prov(G, u) and u not in stack and u != t]
            if not provs:
                raise ValueError(f"tool {t!r}: no tool of the environment provides key {key!r}")
            # Prefer a provider that needs nothing itself, then the earliest instantiated.
            provs.sort(key=lambda u: (len(_req(G, u)) > 0, order[u]))
            visit(provs[0], stack | {t})
        seen.add(t)
        need.append(t)

    visit(target, frozenset())
    return need  # post-order: every provider before its consumers


# ----------------------------------------------------------------------------------------------
# Building one executable, verified environment of a real domain
# ----------------------------------------------------------------------------------------------

class DomainContext:
    """What a worker compiles once per domain and reuses for all its environments: the parsed
    spec, its dependency graph, one in-memory SQLite connection with a tool runtime, and a
    seeded value generator. ``open_state(template_seed, patch)`` resets the connection to an
    environment's initial state (template snapshot + recorded repairs)."""

    def __init__(self, domain, cfg: GrowthConfig | None = None, rows: int = 6):
        from .datagen import ValueGen
        from .db import connect
        from .graph import build_dependency_graph
        from .spec import load_domain
        from .toolgen import ToolRuntime

        self.domain = load_domain(domain) if isinstance(domain, str) else domain
        self.graph = build_dependency_graph(self.domain)
        self.cfg = cfg or GrowthConfig()
        self.rows = rows
        self.conn = connect(self.domain)
        self.runtime = ToolRuntime(self.domain, self.conn)
        # Replays re-run calls whose postconditions were already checked when they were first
        # made (same tool code): they skip the postcondition reads.
        self.replayer = ToolRuntime(self.domain, self.conn, check_post=False)
        self.vg = ValueGen(0)

    @property
    def name(self) -> str:
        return self.domain.name

    def open_state(self, template_seed: int, patch: Sequence[Mapping] = ()) -> None:
        from .datagen import apply_patch, template_db
        from .db import restore

        restore(self.conn, template_db(self.domain, template_seed, self.rows))
        if patch:
            apply_patch(self.conn, self.domain, patch)

    def replay(self, calls: Sequence[Sequence]) -> list | None:
        """Runs recorded ``(name, arguments)`` calls on the current state; their data, or None
        at the first error."""
        out = []
        for name, args in calls:
            res = self.replayer.call(name, dict(args))
            if res.is_error:
                return None
            out.append(res.data)
        return out


TEMPLATE_BLOCK = 50   # environments sharing one template database (cached per worker)


def build_environment(ctx: DomainContext, seed: int, index: int,
                      uses: MutableMapping[str, int] | None = None, attempts: int = 3) -> dict:
    """Grows, instantiates and verifies environment ``index`` of ``ctx``'s domain.

    Returns a JSON-able record: ids, tools, chains (with the concrete calls of each), the
    growth trace, the initial state (template seed + repairs), and ``verified`` (every tool of
    the environment ran successfully along a recorded path on the final initial state). Tools
    that could not be made to run are dropped. When the seed chain cannot be instantiated the
    environment is grown again (``attempts`` times); one still failing, or left with fewer than
    ``min_tools`` tools, is reported with ``verified: False``."""
    from .noise import stable_seed

    uses = uses if uses is not None else {}
    rec = None
    for attempt in range(attempts):
        rec = _build_once(ctx, seed, index, uses, attempt)
        if rec["verified"]:
            break
    rec["attempts"] = attempt + 1
    return rec


def _build_once(ctx: DomainContext, seed: int, index: int, uses: MutableMapping[str, int],
                attempt: int) -> dict:
    from .datagen import Instantiator, apply_patch, template_db
    from .db import restore, snapshot
    from .noise import stable_seed

    d = ctx.domain
    G = ctx.graph
    rng = random.Random(stable_seed("env", d.name, seed, index, attempt))
    growth = grow(G, rng, uses, ctx.cfg)
    template_seed = stable_seed("template", d.name, seed, index // TEMPLATE_BLOCK)
    ctx.vg.reseed(stable_seed("values", d.name, seed, index, attempt))
    patch: list[dict] = []
    inst = Instantiator(d, ctx.conn, ctx.runtime, ctx.vg)
    inst.patch = patch
    init = {"snap": template_db(d, template_seed, ctx.rows), "n": 0, "own": False}
    removed = [0]

    def version() -> int:
        # changes to the initial state so far (repairs added + repairs left out)
        return inst.repairs + removed[0]

    def reset():
        # The initial state is the template plus the repairs so far; re-snapshot only when a
        # repair was added (restoring a snapshot is far cheaper than re-applying updates).
        if init["n"] != version():
            restore(ctx.conn, template_db(d, template_seed, ctx.rows))
            # A repair made mid-path may point at a row that path created: on the initial
            # state it cannot apply, so it is left out (the paths that needed it then fail
            # their replay and their tools are dropped).
            for p in list(patch):
                try:
                    apply_patch(ctx.conn, d, [p])
                except sqlite3.Error:
                    patch.remove(p)
                    removed[0] += 1
            if init["own"]:
                init["snap"].close()
            init.update(snap=snapshot(ctx.conn), n=version(), own=True)
        else:
            restore(ctx.conn, init["snap"])
        inst.pool = {}

    def run(names, repair, use_db=False, tries=None):
        calls = []
        for t in names:
            r = inst.step(t, repair=repair, use_db=use_db, tries=tries)
            if r is None:
                return None
            calls.append([t, r[0]])
        return calls

    sequences: list[list] = []                 # [label, calls]: each must replay cleanly
    recorded_at: list[int] = []                # version() when each sequence started
    chain_calls: list[list | None] = []
    covered: dict[str, int] = {}               # tool -> index of the sequence that ran it
    for ci, chain in enumerate(growth.chains):
        reset()
        start = version()
        calls = run(chain, repair=True)
        chain_calls.append(calls)
        if calls is None:
            if ci == 0:
                break                         # no seed chain: grow again
            continue
        sequences.append([f"chain{ci}", calls])
        recorded_at.append(start)
        for t, _ in calls:
            covered.setdefault(t, len(sequences) - 1)

    def single_pass(todo):
        reset()
        calls = []
        for t in todo:
            r = inst.step(t, repair=False, tries=3)
            if r is not None:
                calls.append([t, r[0]])
        return calls

    if chain_calls and chain_calls[0] is not None:
        start = version()
        pass_calls = single_pass([t for t in growth.tools if t not in covered])
        if pass_calls:
            sequences.append(["pass", pass_calls])
            recorded_at.append(start)
            for t, _ in pass_calls:
                covered.setdefault(t, len(sequences) - 1)
        # What is still not covered runs along its own support path, with repairs.
        for t in growth.tools:
            if t in covered:
                continue
            try:
                path = support_path(G, growth.tools, t)
            except ValueError:
                continue
            reset()
            start = version()
            calls = run(path, repair=True, use_db=True)
            if calls:
                sequences.append([f"path:{t}", calls])
                recorded_at.append(start)
                covered.setdefault(t, len(sequences) - 1)

    def replay_all():
        # A sequence that started on the final initial state (no repair since) replays the
        # same by determinism; only the others need the check.
        ok = []
        for (_, calls), start in zip(sequences, recorded_at):
            if start == version():
                ok.append(True)
                continue
            reset()
            ok.append(ctx.replay(calls) is not None)
        return ok

    # Final check on the final initial state: every recorded sequence replays without error.
    # Repairs made for later paths can break the (repair-free) pass: run it once more.
    ok_seq = replay_all()
    for i, (label, calls) in enumerate(sequences):
        if label == "pass" and not ok_seq[i]:
            again = single_pass([t for t, _ in calls])
            sequences[i][1] = again
            reset()
            ok_seq[i] = bool(again) and ctx.replay(again) is not None
            for t, _ in calls:
                if covered.get(t) == i and t not in {n for n, _ in again}:
                    del covered[t]
    tools = [t for t in growth.tools if t in covered and ok_seq[covered[t]]]
    # a tool's sequence may use tools that were dropped: iterate to a fixpoint
    while True:
        have = set(tools)
        keep = [t for t in tools if {n for n, _ in sequences[covered[t]][1]} <= have]
        if len(keep) == len(tools):
            break
        tools = keep
    verified_chains = []
    for ci in range(len(growth.chains)):
        calls = chain_calls[ci] if ci < len(chain_calls) else None
        idx = next((i for i, (label, _) in enumerate(sequences) if label == f"chain{ci}"), None)
        good = calls is not None and idx is not None and ok_seq[idx] and \
            {n for n, _ in calls} <= set(tools)
        verified_chains.append(calls if good else None)
    if init["own"]:
        init["snap"].close()
    dropped = [t for t in growth.tools if t not in set(tools)]
    return {
        "env_id": f"{d.name}-{seed}-{index:06d}",
        "domain": d.name,
        "seed": seed,
        "index": index,
        "template_seed": template_seed,
        "rows": ctx.rows,
        "tools": tools,
        "dropped_tools": dropped,
        "chains": [list(c) for c in growth.chains],
        "chain_kinds": list(growth.chain_kinds),
        "chain_calls": verified_chains,
        "trace": growth.trace,
        "patch": patch,
        "verified": bool(verified_chains and verified_chains[0] is not None
                         and len(tools) >= min(ctx.cfg.min_tools, G.number_of_nodes())),
        "checks": {"sequences": len(sequences), "tool_calls": sum(len(c) for _, c in sequences),
                   "repairs": inst.repairs},
    }
