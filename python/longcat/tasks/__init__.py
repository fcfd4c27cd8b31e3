"""Task families with checkable answers, shared by the RL recipes, SFT warm starts and the
Heavy Thinking evaluation."""
from longcat.tasks.arith import ArithProblem, make_problems, parse_answer, score

__all__ = ["ArithProblem", "make_problems", "parse_answer", "score"]
