"""The generation engine: paged latent cache, continuous batching, sampling, policy versions.

``LLM`` generates offline; ``AsyncEngine`` streams (``async for``) for servers and RL rollouts;
both take a ``LongcatFlashForCausalLM`` (or any ``longcat.models.paged.PagedModel``) or a
checkpoint folder, and the fields of ``EngineArgs``."""
from longcat.engine.async_engine import AsyncEngine, EngineDeadError
from longcat.engine.llm import LLM
from longcat.engine.llm_engine import EngineArgs, LLMEngine
from longcat.engine.types import Completion, CompletionOutput, SamplingParams

__all__ = ["LLM", "AsyncEngine", "EngineArgs", "LLMEngine", "EngineDeadError", "SamplingParams", "Completion",
           "CompletionOutput"]
