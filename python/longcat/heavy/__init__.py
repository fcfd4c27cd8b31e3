"""Heavy Thinking (LongCat report §5): K parallel trajectories (width) read by a summary step
(depth) that answers in the normal format, with recursive rounds, context memory for multi-turn
and tool use, the self-consistency and confidence-voting baselines, and the summary step as an
RL episode.

    from longcat.heavy import EngineBackend, HeavyThinker
    heavy = HeavyThinker(EngineBackend("path/to/checkpoint"), k=8, rounds=1)
    result = heavy.think("12+7=")

``OpenAIBackend("http://host:port")`` runs the same against any OpenAI-compatible server.
"""
from longcat.heavy.backends import (Backend, EndpointError, EngineBackend, OpenAIBackend, SampleBatch,
                                    SampleRequest)
from longcat.heavy.candidates import Candidate, select_for_summary, strip_thinking
from longcat.heavy.decoder import (BudgetError, HeavyConfig, HeavyResult, HeavyThinker, SummaryEpisode,
                                   default_answer, score_episodes)
from longcat.heavy.memory import EnvTools, FunctionTools, HeavyChat, ToolBox, sample_with_tools
from longcat.heavy.templates import COMPACT, TALLY, VERBOSE, ShownCandidate, SummaryTemplate
from longcat.heavy.voting import confidence_vote, majority_vote, trace_confidence

__all__ = ["Backend", "EngineBackend", "OpenAIBackend", "EndpointError", "SampleBatch", "SampleRequest",
           "Candidate", "select_for_summary", "strip_thinking", "BudgetError", "HeavyConfig", "HeavyResult",
           "HeavyThinker", "SummaryEpisode", "default_answer", "score_episodes", "EnvTools", "FunctionTools",
           "HeavyChat", "ToolBox", "sample_with_tools", "COMPACT", "TALLY", "VERBOSE", "ShownCandidate", "SummaryTemplate",
           "confidence_vote", "majority_vote", "trace_confidence"]
