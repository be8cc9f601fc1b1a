"""`thinkrl eval`: load a checkpoint and a prompt set, evaluate, report."""

from __future__ import annotations

from pathlib import Path

from thinkrl.config import to_yaml
from thinkrl.data.loaders import load_examples
from thinkrl.eval.config import EvalConfig
from thinkrl.eval.evaluate import EvalResult, evaluate
from thinkrl.eval.report import print_table, write_results
from thinkrl.models import load_tokenizer
from thinkrl.rollout.engines import make_engine
from thinkrl.sections import resolve_device, set_torch_threads

__all__ = ["evaluate", "run_eval"]


def run_eval(cfg: EvalConfig) -> EvalResult:
    """Evaluate `cfg.model` on `cfg.data`; writes config.yaml, metrics.json and samples.jsonl."""
    set_torch_threads(cfg.run.torch_threads)
    tokenizer = load_tokenizer(cfg.model.name)
    examples = load_examples(cfg.data)
    device = resolve_device(cfg.model.device) if cfg.eval.engine == "transformers" else None
    engine = make_engine(cfg.eval, cfg.model.name, tokenizer=tokenizer, seed=cfg.eval.seed, dtype=cfg.model.dtype,
                         device=device)
    result = evaluate(engine, tokenizer, examples, cfg.eval, template=cfg.data.template,
                      system_prompt=cfg.data.system_prompt, on_long_prompt=cfg.data.on_long_prompt)
    folder = write_results(result, cfg.run.output_dir)
    (Path(folder) / "config.yaml").write_text(to_yaml(cfg))
    print_table(result, title=f"{cfg.model.name} on {len(examples)} questions")
    return result
