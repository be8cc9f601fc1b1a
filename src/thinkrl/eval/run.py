"""`thinkrl eval`: load a checkpoint and a prompt set, evaluate, report."""

from __future__ import annotations

from pathlib import Path

from thinkrl.config import to_yaml
from thinkrl.data.loaders import load_examples
from thinkrl.eval.config import EvalConfig
from thinkrl.eval.evaluate import EvalResult, evaluate
from thinkrl.eval.report import print_table, write_results
from thinkrl.models import load_model, load_tokenizer
from thinkrl.rollout.transformers_engine import TransformersEngine
from thinkrl.sections import resolve_device, set_torch_threads

__all__ = ["evaluate", "run_eval"]


def run_eval(cfg: EvalConfig) -> EvalResult:
    """Evaluate `cfg.model` on `cfg.data`; writes config.yaml, metrics.json and samples.jsonl."""
    set_torch_threads(cfg.run.torch_threads)
    tokenizer = load_tokenizer(cfg.model.name)
    model = load_model(cfg.model.name, dtype=cfg.model.dtype, device=resolve_device(cfg.model.device))
    examples = load_examples(cfg.data)
    engine = TransformersEngine(model, tokenizer, batch_size=cfg.eval.batch_size)
    result = evaluate(engine, tokenizer, examples, cfg.eval, template=cfg.data.template,
                      system_prompt=cfg.data.system_prompt, on_long_prompt=cfg.data.on_long_prompt)
    folder = write_results(result, cfg.run.output_dir)
    (Path(folder) / "config.yaml").write_text(to_yaml(cfg))
    print_table(result, title=f"{cfg.model.name} on {len(examples)} questions")
    return result
