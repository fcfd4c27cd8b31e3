"""Model-level pieces built on the ops: the LongCat-Flash model (``modeling``), its config and
presets (``config``), checkpoints (``weights``), the engine contract (``paged``) and the Zig-Zag
attention schedule (``zigzag``)."""
from longcat.models.config import PRESETS, LongcatFlashConfig, count_parameters
from longcat.models.modeling import LongcatFlashForCausalLM
from longcat.models.paged import PagedBatch, PagedModel
from longcat.models.zigzag import ZigZagConfig, layer_importance, select_ssa_layers

__all__ = ["LongcatFlashConfig", "LongcatFlashForCausalLM", "PRESETS", "PagedBatch", "PagedModel",
           "count_parameters", "ZigZagConfig", "select_ssa_layers", "layer_importance"]
