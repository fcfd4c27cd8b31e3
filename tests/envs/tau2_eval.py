"""A re-statement (written here, not copied) of tau2-bench's evaluation of a simulation, for
tests of `longcat envs export-tau2`. It follows the behaviour of

* ``src/tau2/evaluator/evaluator_env.py`` (``EnvironmentEvaluator.calculate_reward``): a
  *predicted* environment gets the task's ``initial_state`` and replays the trajectory's tool
  calls; a *gold* environment gets the same initial state and replays
  ``evaluation_criteria.actions`` (errors of gold actions are ignored, as tau2 only logs them);
  the DB reward is 1.0 iff the two database hashes are equal;
* ``src/tau2/evaluator/evaluator_communicate.py``: each ``communicate_info`` string must appear,
  lower-cased and with commas removed, in an assistant message;
* ``src/tau2/evaluator/evaluator.py``: the final reward is the product of the components named
  in ``reward_basis`` (components not implemented here, e.g. NL_ASSERTION, are not allowed).
"""
from __future__ import annotations


def _replay(env, calls):
    for name, args in calls:
        try:
            env.use_tool(name, **args)
        except Exception:  # noqa: BLE001 - a failing call changes nothing, as in tau2
            pass


def db_reward(make_env, task: dict, trajectory_calls) -> float:
    init = (task.get("initial_state") or {}).get("initialization_data")
    predicted = make_env()
    predicted.set_state(init)
    _replay(predicted, trajectory_calls)
    gold = make_env()
    gold.set_state(init)
    _replay(gold, [(a["name"], a["arguments"]) for a in task["evaluation_criteria"]["actions"]])
    return float(predicted.get_db_hash() == gold.get_db_hash())


def communicate_reward(task: dict, assistant_messages) -> float:
    text = " ".join(m.lower().replace(",", "") for m in assistant_messages)
    infos = task["evaluation_criteria"].get("communicate_info") or []
    return float(all(str(i).lower().replace(",", "") in text for i in infos))


def evaluate(make_env, task: dict, trajectory_calls, assistant_messages) -> float:
    reward = 1.0
    for basis in task["evaluation_criteria"]["reward_basis"]:
        if basis == "DB":
            reward *= db_reward(make_env, task, trajectory_calls)
        elif basis == "COMMUNICATE":
            reward *= communicate_reward(task, assistant_messages)
        else:
            raise ValueError(f"reward basis {basis!r} is not re-stated here")
    return reward
