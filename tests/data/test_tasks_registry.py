"""The task registry: names, the Task protocol, and a clear error for an unknown name."""

from __future__ import annotations

import pytest

from thinkrl.data.tasks import TASKS, Task, get_task
from thinkrl.data.tasks.split import HELDOUT_SEED, allowed_for_seed, is_heldout_problem
from thinkrl.errors import DataError


def test_registry_holds_protocol_tasks():
    assert {"chain", "countdown"} <= set(TASKS)
    for name, task in TASKS.items():
        assert isinstance(task, Task) and task.name == name and get_task(name) is task


def test_unknown_task_lists_valid_names():
    with pytest.raises(DataError, match="unknown task 'chian'.*chain.*countdown"):
        get_task("chian")


def test_split_sends_a_tenth_of_problems_to_heldout():
    keys = [f"problem {i}" for i in range(5000)]
    share = sum(map(is_heldout_problem, keys)) / len(keys)
    assert 0.07 < share < 0.13
    assert all(allowed_for_seed(k, HELDOUT_SEED) != allowed_for_seed(k, 0) for k in keys)


def test_too_many_problems_is_a_clear_error():
    from thinkrl.data.tasks import ChainTask

    small = ChainTask(min_steps=1, max_steps=1, max_start=2, max_value=9)
    with pytest.raises(DataError, match="distinct problems"):
        small.generate(1000, seed=0)
    assert small.generate(0, seed=0) == []
