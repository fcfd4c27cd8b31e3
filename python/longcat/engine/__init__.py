"""The generation engine: paged latent cache, continuous batching, sampling, policy versions."""
from longcat.engine.types import Completion, CompletionOutput, SamplingParams

__all__ = ["SamplingParams", "Completion", "CompletionOutput"]
