"""`thinkrl distill`: a student learns from a teacher's reasoning (R1's distillation).

Two ordinary stages in one folder: `thinkrl sample` on the teacher (a checkpoint or an
OpenAI-compatible endpoint; correct, readable answers only) writes `teacher-samples/`,
then `thinkrl sft` trains the student on them into `student/`. Both resume: sampling from
its finished shards, SFT from its last checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from thinkrl.config import Config
from thinkrl.pipeline.sample import SampleConfig, SampleResult, run_sample
from thinkrl.processes import main_process_only
from thinkrl.sections import OutputRunConfig, set_torch_threads
from thinkrl.train.checkpoint import latest_checkpoint
from thinkrl.train.sft import SFTResult, train_sft
from thinkrl.train.sft_config import SFTConfig


class DistillRunConfig(OutputRunConfig):
    output_dir: str = Field("runs/distill", description="run folder: teacher-samples/ and student/ (final/ inside); "
                            "it replaces teacher.run.output_dir and student.run.output_dir")
    torch_threads: int = Field(0, ge=0, description="torch CPU threads for both stages (0: torch's default; "
                               "teacher.run.torch_threads or student.run.torch_threads, when set, win for theirs)")


class DistillConfig(Config):
    renamed: ClassVar[dict[str, str]] = {"output_dir": "run.output_dir", "torch_threads": "run.torch_threads"}

    teacher: SampleConfig = Field(SampleConfig(), description="how to sample and filter the teacher's answers "
                                  "(teacher.model.name or teacher.endpoint, teacher.data, teacher.n, filters, judge)")
    student: SFTConfig = Field(SFTConfig(), description="the student and its SFT settings (student.model.name: the "
                               "student checkpoint; student.data.path is set to the teacher's samples)")
    run: DistillRunConfig = DistillRunConfig()
    resume: bool = Field(False, description="continue the student's SFT from its last checkpoint")


@dataclass
class DistillResult:
    samples: SampleResult
    student: SFTResult


def run_distill(cfg: DistillConfig) -> DistillResult:
    out = Path(cfg.run.output_dir)
    set_torch_threads(cfg.run.torch_threads)
    teacher = cfg.teacher.model_copy(update={
        "run": cfg.teacher.run.model_copy(update={"output_dir": str(out / "teacher-samples")})})
    samples = main_process_only(lambda: run_sample(teacher))  # under accelerate launch, sampled once
    if samples.kept == 0:
        from thinkrl.errors import ThinkrlError

        raise ThinkrlError(f"the teacher had no answer that passed the filters (see {samples.report_path}); "
                           "nothing to distill")
    student_dir = out / "student"
    student = cfg.student.model_copy(update={
        "data": cfg.student.data.model_copy(update={"path": str(samples.data_path), "template": "none"}),
        "run": cfg.student.run.model_copy(update={"output_dir": str(student_dir)}),
        # a student run that was interrupted continues; a finished sampling stage is never redone
        "resume": cfg.resume or latest_checkpoint(student_dir) is not None,
    })
    return DistillResult(samples=samples, student=train_sft(student))
