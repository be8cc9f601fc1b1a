"""`thinkrl reward` end to end: a small jsonl in, rewards and reasons out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from thinkrl.config import load_config
from thinkrl.errors import DataError
from thinkrl.rewards.command import RewardCommandConfig, run_reward

ROWS = [
    {"completion": "<think>2+2</think> <answer>4</answer>", "question": "2+2?", "solution": "It is 4. #### 4"},
    {"completion": "<think>hmm</think> <answer>5</answer>", "question": "2+2?", "solution": "#### 4"},
    {"completion": "The answer is \\boxed{4}", "question": "2+2?", "solution": "#### 4"},
    {"completion": "<think>half</think> <answer>\\frac{1}{2}</answer>", "question": "1/2?", "solution": "#### 0.5"},
]


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "outs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _config(path: Path, **extra) -> RewardCommandConfig:
    overrides = [f"input={path}", "fields={prompt: question, answer: solution}", "answer_marker='####'", "workers=1"]
    return load_config(RewardCommandConfig, None, overrides + [f"{k}={v}" for k, v in extra.items()])


def test_run_reward_writes_rewards_and_reasons(tmp_path: Path) -> None:
    path = _write(tmp_path, ROWS)
    scores = run_reward(_config(path))
    out = [json.loads(line) for line in (tmp_path / "outs.rewards.jsonl").read_text().splitlines()]
    assert [row["reward"] for row in out] == [1.5, 0.5, 1.0, 1.5]
    assert out[1]["reasons"] == {"accuracy": "wrong", "format_r1_zero": "format_ok"}
    assert out[2]["rewards"]["format_r1_zero"] == 0.0 and out[0]["solution"] == ROWS[0]["solution"]
    assert scores.total == [1.5, 0.5, 1.0, 1.5]


def test_run_reward_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        run_reward(_config(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"completion": "x"}\nnot json\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        run_reward(_config(bad))


def test_reward_command_through_the_cli(tmp_path: Path) -> None:
    from thinkrl.cli import app

    path = _write(tmp_path, ROWS)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"input: {path}\noutput: {tmp_path / 'scored.jsonl'}\nfields: {{prompt: question, answer: solution}}\n"
                    "answer_marker: '####'\nworkers: 0\nrewards:\n  - name: accuracy\n  - name: format_r1\n    weight: 0.25\n")
    result = CliRunner().invoke(app, ["reward", str(spec)])
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [row["rewards"]["accuracy"] for row in out] == [1.0, 0.0, 1.0, 1.0]
    assert [row["reward"] for row in out] == [1.25, 0.25, 1.0, 1.25]
    typo = CliRunner().invoke(app, ["reward", "--set", "rewards=[{name: acuracy}]", "--set", f"input={path}"])
    assert typo.exit_code == 2 and "did you mean 'accuracy'" in typo.output
