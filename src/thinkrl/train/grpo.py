"""The GRPO loop: generate -> score -> advantages -> update, then checkpoint and log.

Read `train_grpo` top to bottom; each phase is one call. The math is in `thinkrl.algos`,
the sampling in the rollout engine, the grading in `thinkrl.rewards`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from thinkrl.algos import group_advantages, policy_loss
from thinkrl.config import to_yaml
from thinkrl.data.loaders import load_examples
from thinkrl.data.templates import prompt_prefills_think, render_prompt
from thinkrl.rollout.base import SamplingParams
from thinkrl.rollout.transformers_engine import TransformersEngine
from thinkrl.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from thinkrl.train.config import GRPOConfig
from thinkrl.train.grpo_metrics import LearningWarnings, step_metrics
from thinkrl.train.model_setup import build_optimizer, load_policy, save_final_model
from thinkrl.train.policy import (
    build_policy_batch,
    frozen_logprobs,
    policy_logprobs,
)
from thinkrl.train.progress import StepProgress
from thinkrl.train.rollouts import (
    PromptOrder,
    Rollout,
    sample_and_score,
    shuffle_within_groups,
    zero_variance,
)
from thinkrl.train.tracking import MetricsTracker

log = logging.getLogger(__name__)


@dataclass
class GRPOResult:
    run_dir: Path
    final_model_dir: Path
    steps_done: int
    last_metrics: dict


def train_grpo(cfg: GRPOConfig) -> GRPOResult:
    run_dir = Path(cfg.run.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    if cfg.run.torch_threads:
        torch.set_num_threads(cfg.run.torch_threads)
    torch.manual_seed(cfg.run.seed)

    policy = load_policy(cfg.model, need_reference=cfg.algo.beta > 0)
    model, tokenizer = policy.model, policy.tokenizer
    examples, prompts = [], []
    for source in [cfg.data, *cfg.data_mix]:  # RL for all scenarios mixes prompt sets, each with its template
        loaded = load_examples(source)
        examples += loaded
        prompts += [render_prompt(ex, source.template, tokenizer, source.system_prompt) for ex in loaded]
    for ex, prompt in zip(examples, prompts):
        ex.meta["prompt_prefills_think"] = prompt_prefills_think(prompt)

    updates_per_step = cfg.algo.mu * cfg.optim.updates_per_pass
    optimizer, scheduler = build_optimizer(model, cfg.optim, total_updates=cfg.run.steps * updates_per_step)
    engine = build_engine(model, tokenizer, cfg)

    start_step = 0
    if cfg.resume:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            log.warning("--resume: no checkpoint in %s, starting from step 0", run_dir)
        else:
            start_step = int(load_checkpoint(checkpoint, model, optimizer, scheduler)["step"])
            log.info("resumed from %s (step %d)", checkpoint, start_step)
            _sync(engine, model)  # a separate engine started from the base weights
    tracker = MetricsTracker(run_dir, cfg.run.trackers, resume_step=start_step if cfg.resume else None,
                             config=cfg.model_dump(mode="json"))
    order = PromptOrder(len(examples), cfg.run.seed)
    warnings = LearningWarnings()
    metrics: dict = {}
    step = start_step
    with StepProgress(cfg.run.steps, start_step, "GRPO") as progress:
        for step in range(start_step + 1, cfg.run.steps + 1):
            t0 = time.perf_counter()
            rollout = collect_rollout(engine, examples, prompts, order, step, cfg)
            if hasattr(engine, "sleep"):  # vLLM frees its KV cache while the trainer needs the memory
                engine.sleep()
            t1 = time.perf_counter()
            update_stats = update_policy(model, policy.reference, optimizer, scheduler, rollout, tokenizer.pad_token_id, cfg)
            _sync(engine, model)
            t2 = time.perf_counter()
            metrics = step_metrics(rollout, update_stats, gen_time_s=t1 - t0, train_time_s=t2 - t1,
                                   lr=scheduler.get_last_lr()[0])
            tracker.log(step, metrics)
            warnings.check(step, metrics)
            if step % cfg.run.sample_every == 0 or step == 1:
                tracker.log_samples(step, sample_rows(rollout, limit=2 * cfg.rollout.group_size))
            if (cfg.run.save_every and step % cfg.run.save_every == 0) or step == cfg.run.steps:
                save_checkpoint(run_dir, step, model, tokenizer, optimizer, scheduler,
                                extra_state={"prompts_seen": step * cfg.rollout.prompts_per_step},
                                keep_last=cfg.run.keep_checkpoints)
            progress.advance(metrics)
    tracker.close()
    final_dir = save_final_model(model, tokenizer, run_dir / "final")
    if cfg.run.plot:
        from thinkrl.train.plots import plot_metrics

        plot_metrics(tracker.metrics_path, run_dir / "plots")
    return GRPOResult(run_dir=run_dir, final_model_dir=final_dir, steps_done=step, last_metrics=metrics)


def build_engine(model, tokenizer, cfg: GRPOConfig):
    """The rollout engine. The transformers engine samples from the training model itself;
    vLLM holds its own copy of the weights, synced after every update. Either way the ratio
    uses log-probs the trainer recomputes, never the engine's (train/inference mismatch)."""
    if cfg.rollout.engine == "vllm":
        from thinkrl.models import resolve_model_path
        from thinkrl.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(resolve_model_path(cfg.model.name), cfg.rollout.vllm, tokenizer=tokenizer, seed=cfg.run.seed)
    return TransformersEngine(model, tokenizer, batch_size=cfg.rollout.batch_size)


def _sync(engine, model) -> None:
    if hasattr(engine, "sync_weights"):
        engine.sync_weights(model)


def collect_rollout(engine, examples, prompts, order: PromptOrder, step: int, cfg: GRPOConfig) -> Rollout:
    """Sample, score and compute advantages for one step's prompts; with dynamic sampling,
    keep sampling fresh prompts until enough groups have reward variance (bounded)."""
    G, P = cfg.rollout.group_size, cfg.rollout.prompts_per_step
    generator = torch.Generator().manual_seed(cfg.run.seed * 7919 + step)
    kept_examples, kept_completions, kept_rewards, kept_scores = [], [], [], []
    groups_sampled = zero_var_groups = generated = 0
    rounds = 1 + (cfg.algo.max_refill_rounds if cfg.algo.dynamic_sampling else 0)
    for round_ in range(rounds):
        if round_ == 0:
            index = order.take((step - 1) * P, P)
        else:  # refills come from a stream keyed by step, so resuming reproduces them
            index = torch.randint(len(examples), (P,), generator=generator).tolist()
        params = SamplingParams(n=G, max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                                top_p=cfg.rollout.top_p, seed=cfg.run.seed * 1_000_003 + step * 101 + round_)
        batch_examples = [examples[i] for i in index]
        completions, scores = sample_and_score(engine, [prompts[i] for i in index], batch_examples, params,
                                               cfg.rewards, cfg.rollout.reward_workers, cfg.rewards_by_kind)
        rewards = torch.tensor(scores.total, dtype=torch.float32)
        if cfg.algo.control == "shuffle":
            rewards = shuffle_within_groups(rewards, G, generator)
        flat = zero_variance(rewards, G)
        groups_sampled += len(index)
        zero_var_groups += int(flat.sum())
        generated += sum(len(c.completion_ids) for c in completions)
        keep = [g for g in range(len(index)) if not (cfg.algo.dynamic_sampling and flat[g])]
        for g in keep:
            kept_examples.append(batch_examples[g])
            kept_completions.extend(completions[g * G:(g + 1) * G])
            kept_rewards.append(rewards[g * G:(g + 1) * G])
            kept_scores.append((scores, g))
        if len(kept_examples) >= P:
            break
    if not kept_examples:  # every group was flat in every round: nothing to learn, keep the last round
        kept_examples, kept_completions = batch_examples, completions
        kept_rewards, kept_scores = [rewards.view(-1, G)[g] for g in range(len(index))], [(scores, g) for g in range(len(index))]
    kept_examples, kept_completions = kept_examples[:P], kept_completions[:P * G]
    kept_rewards, kept_scores = kept_rewards[:P], kept_scores[:P]
    rewards = torch.cat(kept_rewards)
    advantages = group_advantages(rewards, G, scale=cfg.algo.scale, level=cfg.algo.level)
    return Rollout(examples=kept_examples, completions=kept_completions, rewards=rewards, advantages=advantages,
                   scores=_merge_scores(kept_scores, G), group_size=G, groups_sampled=groups_sampled,
                   zero_variance_groups=zero_var_groups, generated_tokens=generated)


def update_policy(model, reference, optimizer, scheduler, rollout: Rollout, pad_id: int, cfg: GRPOConfig) -> dict:
    """mu passes over the rollout batch, each split into optimiser steps of micro-batches."""
    batch = build_policy_batch(rollout.completions, pad_id)
    temperature, micro = cfg.rollout.temperature, cfg.optim.micro_batch_size
    # Old log-probs are taken once per rollout; with mu=1 the policy has not moved yet, so the
    # ratio is exactly 1 and logp.detach() serves, saving a forward pass.
    old_logp = frozen_logprobs(model, batch, temperature, micro) if cfg.algo.mu > 1 else None
    ref_logp = None
    if cfg.algo.beta > 0:
        if reference is None:  # LoRA: the reference is the base, adapter switched off
            ref_logp = frozen_logprobs(model, batch, temperature, micro, disable_adapter=True)
        else:
            ref_logp = frozen_logprobs(reference, batch, temperature, micro)
    model.train()
    generator = torch.Generator().manual_seed(cfg.run.seed + len(batch))
    totals: dict[str, float] = {}
    grad_norms = []
    chunk = len(batch) // cfg.optim.updates_per_pass
    for _ in range(cfg.algo.mu):
        order = torch.randperm(len(batch), generator=generator)
        for start in range(0, len(batch), chunk):
            update_index = order[start:start + chunk]
            update_tokens = float(batch.loss_mask[update_index].sum().clamp(min=1))
            for mb_start in range(0, len(update_index), micro):
                index = update_index[mb_start:mb_start + micro]
                part = batch.select(index)
                width = part.loss_mask.shape[1]
                logp, entropy = policy_logprobs(model, part, temperature, with_entropy=True)
                old = old_logp[index, :width] if old_logp is not None else logp.detach()
                ref = ref_logp[index, :width] if ref_logp is not None else None
                loss, stats = policy_loss(logp, old, rollout.advantages[index], part.loss_mask,
                                          eps_low=cfg.algo.eps_low, eps_high=cfg.algo.eps_high, ref_logp=ref,
                                          beta=cfg.algo.beta, aggregation=cfg.algo.aggregation,
                                          max_len_norm=cfg.rollout.max_new_tokens)
                tokens = float(part.loss_mask.sum())
                # Micro-batch losses are means over their own rows or tokens; weighting them
                # by their share makes the accumulated gradient that of the whole update batch.
                weight = tokens / update_tokens if cfg.algo.aggregation == "token" else len(index) / len(update_index)
                (loss * weight).backward()
                stats = dict(stats)
                stats["loss"] = float(loss.detach())
                stats["entropy"] = float((entropy * part.loss_mask).sum() / part.loss_mask.sum().clamp(min=1))
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + float(value) * tokens
                totals["_tokens"] = totals.get("_tokens", 0.0) + tokens
            params = [p for p in model.parameters() if p.requires_grad]
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm)))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    tokens = totals.pop("_tokens", 1.0) or 1.0
    out = {key: value / tokens for key, value in totals.items()}
    out["grad_norm"] = sum(grad_norms) / len(grad_norms)
    return out


def sample_rows(rollout: Rollout, limit: int) -> list[dict]:
    rows = []
    for i, completion in enumerate(rollout.completions[:limit]):
        example = rollout.examples[i // rollout.group_size]
        rows.append({"prompt": example.prompt, "answer": example.answer, "completion": completion.text,
                     "reward": float(rollout.rewards[i]), "advantage": float(rollout.advantages[i]),
                     "reasons": {name: reasons[i] for name, reasons in rollout.scores.reasons.items()}})
    return rows


def _merge_scores(parts: list[tuple], group_size: int):
    """Reward details of the kept groups only, in the kept order."""
    from thinkrl.rewards import RewardScores

    names = list(parts[0][0].by_name) if parts else []
    by_name = {n: [] for n in names}
    reasons = {n: [] for n in names}
    total = []
    for scores, g in parts:
        span = slice(g * group_size, (g + 1) * group_size)
        total.extend(scores.total[span])
        for n in names:
            by_name[n].extend(scores.by_name[n][span])
            reasons[n].extend(scores.reasons[n][span])
    unique = {id(scores): scores for scores, _ in parts}.values()
    errors, timeouts = sum(s.errors for s in unique), sum(s.timeouts for s in unique)
    return RewardScores(total=total, by_name=by_name, reasons=reasons, errors=errors, timeouts=timeouts)
