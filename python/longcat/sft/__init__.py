"""Supervised fine-tuning on agentic trajectories (``longcat sft``): see ``trainer``."""
from longcat.sft.trainer import SFTConfig, SFTResult, latest_checkpoint, train

__all__ = ["SFTConfig", "SFTResult", "train", "latest_checkpoint"]
