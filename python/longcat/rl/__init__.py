"""DORA-style asynchronous RL: streaming rollouts over several live policy versions with bounded
staleness, GSPO/GRPO with triplet clipping and TIS, online filtering, lossless resume.

``longcat.rl.train(recipe, out_dir)`` runs a recipe (``rl/*.yaml``): ``task.name: arith`` (one-turn,
checkable) or ``envs`` (multi-turn episodes in built environments with context management and a
noise curriculum, ``longcat.rl.agent``); the parts (``EnginePolicy``, ``StreamingLoop``,
``PolicyTrainer``, the losses) are usable on their own."""
from longcat.rl.losses import TripletClip, group_advantages, grpo_loss, gspo_loss
from longcat.rl.protocols import Group, Policy, PromptSource, RewardFn, Sample
from longcat.rl.recipe import Recipe, load_recipe
from longcat.rl.runner import TrainResult, train

__all__ = ["train", "TrainResult", "Recipe", "load_recipe", "TripletClip", "group_advantages", "grpo_loss",
           "gspo_loss", "Sample", "Group", "Policy", "RewardFn", "PromptSource"]
