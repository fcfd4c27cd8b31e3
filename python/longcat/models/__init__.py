"""Model-level pieces built on the ops: the Zig-Zag attention schedule (``zigzag``)."""
from longcat.models.zigzag import ZigZagConfig, layer_importance, select_ssa_layers

__all__ = ["ZigZagConfig", "select_ssa_layers", "layer_importance"]
