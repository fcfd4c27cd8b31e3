"""Scale-out over torch.distributed (NCCL on GPU, gloo on CPU)."""
from longcat.distributed.expert_parallel import ExpertParallel

__all__ = ["ExpertParallel"]
