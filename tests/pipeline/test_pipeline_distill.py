"""Distillation: a teacher served over HTTP on 127.0.0.1 is sampled, filtered, and a student
is SFT'd on what was kept; a rerun reuses the samples and the student's checkpoint."""

from __future__ import annotations

import json

from thinkrl.config import build_config
from thinkrl.pipeline.distill import DistillConfig, run_distill
from thinkrl.rewards import RewardResult, register
from thinkrl.rollout.server import serve_in_background


@register("test_distill_has_digit", isolate=False)
def has_digit(completion: str, example, **options) -> RewardResult:
    return RewardResult(1.0, "digit") if any(ch.isdigit() for ch in completion) else RewardResult(0.0, "none")


def distill_config(base_url: str, student, out) -> DistillConfig:
    return build_config(DistillConfig, {
        "run": {"output_dir": str(out), "torch_threads": 1},
        "teacher": {"endpoint": {"base_url": base_url, "model": "teacher"}, "n": 3, "max_new_tokens": 12,
                    "temperature": 1.0, "chunk_size": 4, "rewards": [{"name": "test_distill_has_digit"}],
                    "reward_workers": 0, "data": {"limit": 8}, "decontam": {"enabled": False},
                    "filters": {"require_format": False, "drop_truncated": False, "language": None}},
        "student": {"model": {"name": str(student)}, "run": {"epochs": 2, "batch_size": 4, "micro_batch_size": 4,
                                                              "save_every": 2, "plot": False}},
    })


def test_distill_from_a_served_teacher_trains_the_student_on_the_kept_answers(tiny_random_model, tmp_path):
    with serve_in_background(str(tiny_random_model), served_model_name="teacher") as url:
        result = run_distill(distill_config(url, tiny_random_model, tmp_path / "run"))
        kept = [json.loads(line) for line in result.samples.data_path.read_text().splitlines()]
        assert kept and len(kept) == result.samples.kept
        assert all(any(ch.isdigit() for ch in row["response"]) for row in kept)
        final = tmp_path / "run" / "student" / "final"
        assert result.student.final_model_dir == final and (final / "config.json").is_file()
        assert result.student.steps_done > 0

        # rerun: the samples are reused as they are, the student resumes from its last checkpoint
        shards = sorted((tmp_path / "run" / "teacher-samples" / "shards").iterdir())
        before = [path.stat().st_mtime_ns for path in shards]
        again = run_distill(distill_config(url, tiny_random_model, tmp_path / "run"))
        assert again.samples.data_path.read_text() == result.samples.data_path.read_text()
        assert again.student.steps_done == result.student.steps_done
        assert [path.stat().st_mtime_ns for path in shards] == before  # no shard was sampled again
