"""Evaluation of agents on held-out environment tasks (``longcat eval``): see ``runner``."""
from longcat.evaluate.runner import EvalConfig, evaluate, load_heldout, markdown_table, partial_credit, pass_hat_k

__all__ = ["EvalConfig", "evaluate", "load_heldout", "markdown_table", "partial_credit", "pass_hat_k"]
