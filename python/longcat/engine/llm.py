"""``LLM``: offline generation (vLLM's ``LLM``): a list of prompts in, a list of Completions out."""
from __future__ import annotations

import dataclasses

import os
from typing import Optional, Sequence, Union

import torch

from longcat.engine.llm_engine import EngineArgs, LLMEngine, Prompt
from longcat.engine.types import Completion, SamplingParams
from longcat.engine.weights import WeightsSource

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def load_tokenizer(tokenizer, folder: Optional[str] = None):
    """A tokenizer object as given, one loaded from a folder path, or the checkpoint folder's
    own tokenizer files (None when it has none)."""
    if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    path = os.fspath(tokenizer) if tokenizer is not None else folder
    if path is None or not any(os.path.exists(os.path.join(path, f)) for f in _TOKENIZER_FILES):
        if tokenizer is not None:
            raise ValueError(f"tokenizer: no tokenizer files ({', '.join(_TOKENIZER_FILES)}) in {path!r}")
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def build_engine(model_or_path, tokenizer=None, **engine_args) -> LLMEngine:
    """The engine for a ``LongcatFlashForCausalLM`` (or any PagedModel) or a checkpoint folder."""
    args = EngineArgs(**engine_args)
    folder = None
    if isinstance(model_or_path, (str, os.PathLike)):
        folder = os.fspath(model_or_path)
        if not os.path.isdir(folder):
            raise ValueError(f"model_or_path: {folder!r} is not a checkpoint folder")
        from longcat.models import LongcatFlashForCausalLM

        model = LongcatFlashForCausalLM.from_pretrained(folder, dtype=args.dtype)
    elif isinstance(model_or_path, torch.nn.Module) and hasattr(model_or_path, "forward_paged"):
        model = model_or_path
    else:
        raise TypeError(f"model_or_path must be a checkpoint folder or a model with forward_paged, "
                        f"got {type(model_or_path).__name__}")
    return LLMEngine(model, load_tokenizer(tokenizer, folder), args)


def _as_prompt_list(prompts) -> list[Prompt]:
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, torch.Tensor):
        prompts = prompts.tolist()
    prompts = list(prompts)
    if prompts and all(isinstance(t, int) and not isinstance(t, bool) for t in prompts):
        return [prompts]  # one prompt given as token ids
    return prompts


class LLM:
    """Offline generation. ``model_or_path``: a checkpoint folder (config.json + safetensors +
    tokenizer files) or a model; ``engine_args``: the fields of ``EngineArgs``."""

    def __init__(self, model_or_path, tokenizer=None, **engine_args):
        self.engine = build_engine(model_or_path, tokenizer, **engine_args)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def version(self) -> int:
        return self.engine.version

    def generate(self, prompts: Union[Prompt, Sequence[Prompt]],
                 sampling_params: Union[None, SamplingParams, Sequence[SamplingParams]] = None,
                 use_tqdm: bool = False) -> list[Completion]:
        """Completions in prompt order. A prompt that cannot be served gets ``error`` set (and
        ``finished=True``) while the others run; invalid sampling params raise ValueError
        before anything runs."""
        prompts = _as_prompt_list(prompts)
        if sampling_params is None or isinstance(sampling_params, SamplingParams):
            params = [sampling_params or SamplingParams()] * len(prompts)
        else:
            params = list(sampling_params)
            if len(params) != len(prompts):
                raise ValueError(f"sampling_params: expected one per prompt ({len(prompts)}), got {len(params)}")
        from longcat.engine.sampler import validate_params

        for p in params:
            validate_params(p)
        reqs = []
        bar = None
        if use_tqdm:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(prompts), desc="generate")
        try:
            for p, sp in zip(prompts, params):
                reqs.append(self.engine.add_request(p, sp))
            while self.engine.has_unfinished():
                done = [r for r in self.engine.step() if r.finished]
                if bar is not None and done:
                    bar.update(len(done))
        except BaseException:
            for r in reqs:  # leave the engine clean for the next call
                self.engine.abort(r.request_id)
            raise
        finally:
            if bar is not None:
                bar.close()
        return [LLMEngine.snapshot(r) for r in reqs]

    def chat(self, messages, sampling_params: Optional[SamplingParams] = None, tools=None) -> list[Completion]:
        """Generate replies to one conversation (a list of ``{"role", "content"}`` dicts) or a
        list of them, through the tokenizer's chat template."""
        if self.tokenizer is None:
            raise ValueError("chat: the engine has no tokenizer (and so no chat template)")
        from longcat.engine.chat import chat_stop_token_ids

        convs = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        prompts = [list(self.tokenizer.apply_chat_template(c, tools=tools, add_generation_prompt=True,
                                                           tokenize=True, return_dict=True)["input_ids"])
                   for c in convs]
        # A reply ends at the end-of-turn token as well as at EOS, unless ignore_eos (as the server).
        params = dataclasses.replace(sampling_params or SamplingParams())
        if not params.ignore_eos:
            params.stop_token_ids = sorted(set(params.stop_token_ids or []) | set(chat_stop_token_ids(self.tokenizer)))
        return self.generate(prompts, params)

    def update_weights(self, state_dict_or_path: WeightsSource, version: int, **kwargs) -> None:
        """New policy weights (see ``LLMEngine.update_weights``)."""
        self.engine.update_weights(state_dict_or_path, version, **kwargs)
