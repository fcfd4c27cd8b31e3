"""Prefill/decode disaggregation: one process computes prompts, another decodes them, and the
KV latents move between them chunk by chunk (report §4: KV blocks aggregated into chunks and
sent asynchronously, overlapping the transfer with the prefill of later chunks).

``PrefillWorker`` (rank ``prefill_rank``) runs each prompt through the model ``chunk_pages``
pages at a time and ``isend``s every chunk's pages (all layers) as soon as they are complete, so
chunk i travels while chunk i+1 is computed. ``DecodeWorker`` (rank ``decode_rank``) receives on
a background thread into staging buffers and copies each chunk into pages of its ``LLMEngine``
(``kv_copy_blocks``) as it lands. The prefill side's last forward already computed the logits
of the last prompt token; they travel after the last chunk, and the decode side samples the
first token from them with its own sampler and generators (as the engine's step would), so it
recomputes nothing: the sequence joins the engine with the whole prompt cached and its first
token sampled, and decodes from there. Its output is the single-process engine's (logprobs up to
float rounding: the prefill side computed the last token in a chunk of its own).

Transport: ``torch.distributed`` point-to-point on the default group (gloo on CPU; NCCL on GPU
with the caches on the device). Per request: a header ``[kind, prompt_len, chunk_pages,
meta_len, vocab]`` (int64), the request id and sampling params as JSON bytes, the prompt ids,
the chunks, each ``[layers, pages, page_size, 1, 576]`` in the cache dtype, then the last
prompt token's logits ``[vocab]`` (float32). A peer that dies during
a handoff fails that request only (``Completion.error``); the decode side keeps serving the
requests it already holds.

Threads: the two processes share the machine's cores, so each should get its own share
(``num_threads``; e.g. N - 1 for prefill and 1 for decode on N cores). Two processes that each
run torch's default of one thread per core time-share every core, and a parallel region
whose threads are not all running at once waits at its barriers: on 2 shared cores that cost
the handoff more than 10x in time to first token (``longcat bench kv``, pd rows).
"""
from __future__ import annotations

import json
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import torch
import torch.distributed as dist

import longcat
from longcat.engine import sampler
from longcat.engine.llm_engine import LLMEngine
from longcat.engine.types import Completion, SamplingParams
from longcat.models.paged import PagedBatch
from longcat.ops import kv_copy_blocks

_STOP, _REQUEST = 0, 1


def set_process_threads(who: str, num_threads: Optional[int]) -> None:
    """This process's torch and kernel threads (None: leave them as they are)."""
    if num_threads is None:
        return
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"{who}: 'num_threads' must be None or an int >= 1, got {num_threads!r}")
    torch.set_num_threads(num_threads)
    longcat.set_num_threads(num_threads)


class PrefillWorker:
    def __init__(self, model: torch.nn.Module, page_size: int = 64, chunk_pages: int = 4,
                 max_len: Optional[int] = None, decode_rank: int = 1, num_threads: Optional[int] = None):
        if isinstance(chunk_pages, bool) or not isinstance(chunk_pages, int) or chunk_pages < 1:
            raise ValueError(f"PrefillWorker: 'chunk_pages' must be an int >= 1, got {chunk_pages!r}")
        set_process_threads("PrefillWorker", num_threads)
        self.model = model.eval()
        self.page_size, self.chunk_pages, self.decode_rank = page_size, chunk_pages, decode_rank
        config = model.config
        self.max_len = max_len or int(getattr(config, "max_position_embeddings", 2048))
        device = next(model.parameters()).device
        self.caches = model.make_kv_caches(math.ceil(self.max_len / page_size), page_size, device=device)
        self.device = device

    def send(self, prompt_ids: Sequence[int], params: SamplingParams, request_id: str) -> None:
        """Prefill one prompt chunk by chunk, sending each chunk's pages as soon as it is done."""
        ids = list(prompt_ids)
        L, ps = len(ids), self.page_size
        if not 0 < L < self.max_len:
            raise ValueError(f"PrefillWorker.send: the prompt must have 1 to {self.max_len - 1} tokens, got {L}")
        pages = math.ceil(L / ps)
        n_chunks = math.ceil(pages / self.chunk_pages)
        meta = json.dumps({"request_id": request_id, "params": asdict(params)}).encode()
        dst = self.decode_rank
        vocab = int(self.model.config.vocab_size)
        dist.send(torch.tensor([_REQUEST, L, self.chunk_pages, len(meta), vocab], dtype=torch.int64), dst)
        dist.send(torch.frombuffer(bytearray(meta), dtype=torch.uint8), dst)
        dist.send(torch.tensor(ids, dtype=torch.int64), dst)
        dev = self.device
        table = torch.arange(pages, dtype=torch.int32, device=dev)[None]
        step = self.chunk_pages * ps
        sends = []
        for c in range(n_chunks):
            t0, t1 = c * step, min(L, (c + 1) * step)
            batch = PagedBatch(
                input_ids=torch.tensor(ids[t0:t1], dtype=torch.int64, device=dev),
                positions=torch.arange(t0, t1, dtype=torch.int64, device=dev),
                cu_seqlens_q=torch.tensor([0, t1 - t0], dtype=torch.int32, device=dev),
                seq_lens=torch.tensor([t1], dtype=torch.int32, device=dev),
                block_table=table, logits_indices=torch.tensor([t1 - t0 - 1], dtype=torch.int64, device=dev),
                max_q_len=t1 - t0)
            with torch.inference_mode():
                logits = self.model.forward_paged(batch, self.caches)
            p0, p1 = c * self.chunk_pages, min(pages, (c + 1) * self.chunk_pages)
            chunk = torch.stack([cache[p0:p1] for cache in self.caches])
            sends.append(dist.isend(chunk, dst))  # travels while the next chunk is computed
        # The last prompt token's logits: the decode side samples the first token from them
        # instead of computing that token again.
        last = logits[-1].float().contiguous()
        if last.numel() != vocab:
            raise ValueError(f"PrefillWorker.send: the model's logits have {last.numel()} entries, its "
                             f"config.vocab_size is {vocab}")
        sends.append(dist.isend(last, dst))
        for s in sends:
            s.wait()

    def stop(self) -> None:
        """Tell the decode worker that no more requests come."""
        dist.send(torch.tensor([_STOP, 0, 0, 0, 0], dtype=torch.int64), self.decode_rank)


@dataclass(eq=False)
class _Handoff:
    request_id: str
    params: SamplingParams
    prompt: list[int]
    chunk_pages: int
    n_chunks: int
    pages: list[int] = field(default_factory=list)
    arrived: int = 0
    error: Optional[str] = None


class DecodeWorker:
    def __init__(self, engine: LLMEngine, prefill_rank: int = 0, num_threads: Optional[int] = None):
        set_process_threads("DecodeWorker", num_threads)
        self.engine = engine
        self.prefill_rank = prefill_rank
        caches = engine.kv_caches
        self._layers, self._page_shape = len(caches), tuple(caches[0].shape[1:])
        self._dtype, self._device = caches[0].dtype, caches[0].device
        self._events: queue.Queue = queue.Queue()
        self._receiver = threading.Thread(target=self._receive, name="longcat-pd-recv", daemon=True)
        self.first_token_at: dict[str, float] = {}  # request id -> time.time() of its first decoded token

    # ---- the receiving thread: only torch.distributed and staging buffers -------------------------

    def _receive(self) -> None:
        src = self.prefill_rank
        handoff = None
        try:
            while True:
                header = torch.empty(5, dtype=torch.int64)
                dist.recv(header, src)
                kind, L, chunk_pages, meta_len, vocab = header.tolist()
                if kind == _STOP:
                    self._events.put(("stop", None, None))
                    return
                meta = torch.empty(meta_len, dtype=torch.uint8)
                dist.recv(meta, src)
                info = json.loads(bytes(meta.tolist()).decode())
                prompt = torch.empty(L, dtype=torch.int64)
                dist.recv(prompt, src)
                pages = math.ceil(L / self._page_shape[0])
                n_chunks = math.ceil(pages / chunk_pages)
                handoff = _Handoff(info["request_id"], SamplingParams(**info["params"]), prompt.tolist(),
                                   chunk_pages, n_chunks)
                self._events.put(("request", handoff, None))
                for c in range(n_chunks):
                    n = min(chunk_pages, pages - c * chunk_pages)
                    buf = torch.empty((self._layers, n) + self._page_shape, dtype=self._dtype, device=self._device)
                    dist.recv(buf, src)
                    self._events.put(("chunk", handoff, buf))
                logits = torch.empty(vocab, dtype=torch.float32, device=self._device)
                dist.recv(logits, src)
                self._events.put(("logits", handoff, logits))
                handoff = None
        except Exception as e:  # the peer died or the group broke: only the request in flight fails
            self._events.put(("lost", handoff, e))

    # ---- the engine's thread ---------------------------------------------------------------------

    def serve(self) -> dict[str, Completion]:
        """Receive handoffs and decode until the prefill side stops (or is lost) and every
        request is done; returns each request's completion (failed ones with ``error``)."""
        engine = self.engine
        self._receiver.start()
        results: dict[str, Completion] = {}
        live: dict[str, object] = {}
        receiving = True
        while receiving or engine.has_unfinished():
            block = receiving and not engine.has_unfinished()
            try:
                while True:
                    kind, handoff, payload = self._events.get(block=block)
                    block = False
                    if kind == "stop":
                        receiving = False
                    elif kind == "lost":
                        receiving = False
                        if handoff is not None:
                            self._fail(handoff, f"the prefill peer was lost during the handoff: {payload}", results)
                    elif kind == "request":
                        self._start(handoff, results)
                    elif handoff.error is not None:
                        pass
                    elif kind == "chunk":
                        self._land_chunk(handoff, payload)
                    else:
                        self._first_token(handoff, payload, live)
            except queue.Empty:
                pass
            if engine.has_unfinished():
                engine.step()
            for rid, req in list(live.items()):
                if rid not in self.first_token_at and any(o.token_ids for o in req.outputs):
                    self.first_token_at[rid] = time.time()
                if req.finished:
                    results[rid] = LLMEngine.snapshot(req)
                    del live[rid]
        self._receiver.join()
        return results

    def _start(self, h: _Handoff, results: dict) -> None:
        alloc = self.engine.allocator
        need = math.ceil(len(h.prompt) / alloc.page_size)
        if need > alloc.num_free or len(h.prompt) >= self.engine.max_len:
            self._fail(h, f"the decode worker cannot hold {len(h.prompt)} prompt tokens now "
                          f"({alloc.num_free} free pages of {alloc.page_size})", results)
            return
        h.pages = [alloc.allocate() for _ in range(need)]

    def _land_chunk(self, h: _Handoff, buf: torch.Tensor) -> None:
        first = h.arrived * h.chunk_pages
        dst = h.pages[first:first + buf.shape[1]]
        src = list(range(buf.shape[1]))
        for layer, cache in zip(buf, self.engine.kv_caches):
            kv_copy_blocks(layer, cache, src, dst)
        h.arrived += 1

    def _first_token(self, h: _Handoff, logits: torch.Tensor, live: dict) -> None:
        """Every chunk has landed: the sequence joins the engine with the whole prompt cached,
        and its first token is sampled from the prefill side's logits, as the engine's step
        samples (forking the other samples of n > 1 the same way)."""
        engine = self.engine
        req = engine.add_request(h.prompt, h.params, request_id=h.request_id)
        live[h.request_id] = req
        if req.error is not None:
            engine.allocator.free_all(h.pages)
            return
        seq = req.seqs[0]
        seq.pages, seq.num_computed, seq.kv_epoch = h.pages, len(h.prompt), engine.scheduler.epoch
        h.pages = []
        engine.scheduler.register_full_pages(seq)
        group = [seq] + (engine._fork(seq) if h.params.n > 1 else [])
        out = sampler.sample(logits[None].expand(len(group), -1), [h.params] * len(group),
                             [s.generator for s in group])
        for i, s in enumerate(group):
            top = None if out.top_ids is None else (out.top_ids[i], out.top_logprobs[i])
            engine._append_token(s, out.token_ids[i], out.logprobs[i], top)
        self.first_token_at[h.request_id] = time.time()
        if req.finished:
            engine.requests.pop(h.request_id, None)

    def _fail(self, h: _Handoff, why: str, results: dict) -> None:
        h.error = why
        if h.pages:
            self.engine.allocator.free_all(h.pages)
            h.pages = []
        results[h.request_id] = Completion(h.request_id, None, list(h.prompt), [], True, why)
