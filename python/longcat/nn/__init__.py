"""torch modules built on the longcat ops."""
from longcat.nn.moe import MoE, MoEConfig

__all__ = ["MoE", "MoEConfig"]
