"""Agentic training data (MISSION.md §6): trajectories synthesised from built environments
(``synth``), their rendering into token ids with assistant-only loss masks (``format``), and the
adapter over ``longcat.envs`` (``envs_adapter``); ``longcat data synth`` is ``cli``."""
