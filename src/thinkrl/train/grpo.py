"""The GRPO loop: generate -> score -> advantages -> update, then checkpoint and log.

Read `train_grpo` top to bottom; each phase is one call. The math is in `thinkrl.algos`,
the sampling in the rollout engine, the grading in `thinkrl.rewards`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from thinkrl.algos import ADVANTAGES, AGGREGATIONS, CORRECTIONS, adapt_entropy_coef, policy_loss
from thinkrl.algos.correction import mismatch_stats
from thinkrl.data.loaders import load_examples
from thinkrl.data.templates import prompt_prefills_think, render_prompt
from thinkrl.errors import ConfigError
from thinkrl.models import resolve_model_path
from thinkrl.processes import main_process_only
from thinkrl.rewards.routing import NOT_APPLICABLE
from thinkrl.rollout.base import holds_own_weights
from thinkrl.rollout.engines import make_engine
from thinkrl.train.async_rollouts import Prefetcher, check_async
from thinkrl.train.checkpoint import resume_checkpoint
from thinkrl.train.config import GRPOConfig
from thinkrl.train.curriculum import PassRates, group_pass_rates
from thinkrl.train.distributed import (
    check_launch,
    gather_rollout,
    global_advantages,
    local_share,
    max_over_processes,
    reduce_weighted,
)
from thinkrl.train.grpo_metrics import LearningWarnings, step_metrics
from thinkrl.train.interrupts import StopSignals, interrupted
from thinkrl.train.microbatches import split_to, token_microbatches
from thinkrl.train.model_setup import build_optimizer, load_policy, make_accelerator
from thinkrl.train.policy import (
    build_policy_batch,
    frozen_logprobs,
    packs_rows,
    policy_logprobs,
    sampler_logprobs,
)
from thinkrl.train.progress import StepProgress, end_line, say, start_line
from thinkrl.train.rollouts import (
    PromptOrder,
    Rollout,
    sample_and_score,
    shuffle_within_groups,
    step_params,
    zero_variance,
)
from thinkrl.train.run_folder import prepare_run_folder
from thinkrl.train.saving import restore, restore_sharded_optimizer, save_final, save_step
from thinkrl.train.sharding import prepare_reference, unsharded
from thinkrl.train.tracking import MetricsTracker


@dataclass
class GRPOResult:
    run_dir: Path
    final_model_dir: Path
    steps_done: int
    last_metrics: dict


def train_grpo(cfg: GRPOConfig) -> GRPOResult:
    """Train `cfg.model` with GRPO. Under `accelerate launch` every process samples and
    scores its share of each step's prompts (whole groups) and DDP averages the gradients
    (FSDP2 also shards the weights); the result equals a one-process run with the same global
    batch, up to float tolerance."""
    from accelerate.utils import set_seed

    if cfg.run.torch_threads:
        torch.set_num_threads(cfg.run.torch_threads)
    accelerator = make_accelerator(cfg.model)
    check_launch(accelerator, lora=cfg.model.lora.enabled)
    main = accelerator.is_main_process
    world = accelerator.num_processes
    if cfg.rollout.prompts_per_step % world:
        raise ConfigError(f"rollout.prompts_per_step={cfg.rollout.prompts_per_step} must be divisible by the "
                          f"number of processes ({world}): each process takes whole groups")
    local_rows = cfg.rollout.prompts_per_step // world * cfg.rollout.group_size
    if local_rows % cfg.optim.updates_per_pass:  # else processes would take different numbers of steps
        raise ConfigError(f"optim.updates_per_pass={cfg.optim.updates_per_pass} must divide each process's "
                          f"rollout batch ({local_rows} samples on each of {world} processes)")
    run_dir, command = Path(cfg.run.output_dir), "grpo" if type(cfg) is GRPOConfig else "zero"
    main_process_only(lambda: prepare_run_folder(cfg, run_dir, command))
    set_seed(cfg.run.seed)

    policy = load_policy(cfg.model, need_reference=cfg.algo.beta > 0)
    model, tokenizer = policy.model, policy.tokenizer
    examples, prompts, data_metrics = load_prompts(cfg, tokenizer, model.config)
    updates_per_step = cfg.algo.mu * cfg.optim.updates_per_pass
    optimizer, scheduler = build_optimizer(model, cfg.optim, total_updates=cfg.run.steps * updates_per_step)

    checkpoint = resume_checkpoint(run_dir) if cfg.resume else None
    state = restore(accelerator, checkpoint, model, optimizer, scheduler) if checkpoint else {}
    start_step = int(state.get("step", 0))
    model, optimizer = accelerator.prepare(model, optimizer)
    restore_sharded_optimizer(accelerator, checkpoint, model, optimizer.optimizer)
    reference = prepare_reference(accelerator, policy.reference)
    order = PromptOrder(len(examples), cfg.run.seed)
    check_async(cfg, world)
    prefetcher = None
    if cfg.rollout.max_staleness:  # a sampler process, k steps ahead
        prefetcher = Prefetcher(cfg, prompts, order, resolve_model_path(cfg.model.name),
                                resolve_model_path(cfg.model.tokenizer) if cfg.model.tokenizer else None)
        prefetcher.start(accelerator.unwrap_model(model), start_step, state.get("in_flight"))
        engine = prefetcher.engine
    else:
        engine = build_engine(accelerator.unwrap_model(model), tokenizer, cfg)
    if start_step:
        _sync(engine, accelerator.unwrap_model(model))  # a separate engine started from the base weights
    tracker = None
    if main:
        tracker = MetricsTracker(run_dir, cfg.run.trackers, resume_step=start_step if cfg.resume else None,
                                 config=cfg.model_dump(mode="json"))
    curriculum = None
    if cfg.algo.curriculum == "pass_rate":
        curriculum = PassRates(len(examples), cfg.algo.curriculum_weight, cfg.run.seed)
        curriculum.load(state.get("pass_rates"))
    entropy_coef = float(state.get("entropy_coef", cfg.algo.entropy_coef))
    warnings = LearningWarnings(entropy_floor=cfg.algo.entropy_floor)
    metrics: dict = {}
    step = start_step
    started = time.perf_counter()
    sources = ", ".join(s.path for s in [cfg.data, *cfg.data_mix])
    say(start_line("GRPO", run_dir, cfg.model.name, f"{sources} ({len(examples)} prompts)", start_step, checkpoint), main)
    with (StepProgress(cfg.run.steps, start_step, "GRPO", enabled=main) as progress, StopSignals(accelerator) as stop,
          contextlib.closing(prefetcher) if prefetcher else contextlib.nullcontext()):
        for step in range(start_step + 1, cfg.run.steps + 1):
            t0 = time.perf_counter()
            if prefetcher:
                prefetcher.before_step(accelerator.unwrap_model(model), step)
            # the transformers engine samples from the policy itself: under FSDP, from whole weights
            with (contextlib.nullcontext() if holds_own_weights(engine) else unsharded(accelerator, model),
                  accelerator.autocast()):
                rollout = collect_rollout(engine, examples, prompts, order, step, cfg,
                                          rank=accelerator.process_index, world=world, curriculum=curriculum)
            if world > 1:  # batch-level estimators normalise over every process's rewards
                rollout.advantages = global_advantages(accelerator, rollout, cfg.algo.advantage,
                                                       cfg.algo.advantage_call_options())
            if holds_own_weights(engine):  # vLLM frees its KV cache while the trainer needs the memory
                engine.sleep()
            t1 = time.perf_counter()
            update_stats = update_policy(accelerator, model, reference, optimizer, scheduler, rollout,
                                         tokenizer.pad_token_id, cfg, entropy_coef=entropy_coef)
            synced = _sync(engine, accelerator.unwrap_model(model))
            t2 = time.perf_counter()
            everything = gather_rollout(accelerator, rollout)
            metrics = step_metrics(everything, update_stats, gen_time_s=t1 - t0, train_time_s=t2 - t1,
                                   lr=scheduler.get_last_lr()[0], data=data_metrics)
            if entropy_coef > 0 or cfg.algo.entropy_target is not None:
                metrics["entropy_coef"] = entropy_coef
            metrics.update(rollout.extra.get("curriculum", {}))
            if holds_own_weights(engine):
                metrics["sync/bytes"] = synced
            if prefetcher:
                metrics.update(prefetcher.metrics(step))
            if cfg.algo.entropy_target is not None:  # the coefficient the next step trains with
                entropy_coef = adapt_entropy_coef(entropy_coef, update_stats["entropy"], cfg.algo.entropy_target,
                                                  cfg.algo.entropy_coef_step, cfg.algo.entropy_coef_max)
            if curriculum is not None:  # every process holds the same rates: the next draw agrees
                curriculum.observe(everything.group_pass)
            if main:
                tracker.log(step, metrics)
                warnings.check(step, metrics)
                if step % cfg.run.sample_every == 0 or step == 1:
                    tracker.log_samples(step, sample_rows(everything, limit=2 * cfg.rollout.group_size))
            stopping = step < cfg.run.steps and stop.requested()
            if (cfg.run.save_every and step % cfg.run.save_every == 0) or step == cfg.run.steps or stopping:
                extra = {"prompts_seen": step * cfg.rollout.prompts_per_step, "entropy_coef": entropy_coef}
                if curriculum is not None:
                    extra["pass_rates"] = curriculum.state()
                if prefetcher:  # the generations in flight, so a resumed run trains on the same samples
                    extra["in_flight"] = prefetcher.in_flight(step)
                save_step(accelerator, run_dir, step, model, tokenizer, optimizer.optimizer, scheduler,
                          extra_state=extra, keep_last=cfg.run.keep_checkpoints)
            progress.advance(metrics)
            if stopping:
                break
    if stop.signum and step < cfg.run.steps:
        if main:
            tracker.close()
        raise interrupted(stop.signum, step, run_dir, command)
    final_dir = save_final(accelerator, run_dir, model, tokenizer)
    if main:
        tracker.close()
        if cfg.run.plot:
            from thinkrl.train.plots import plot_metrics

            plot_metrics(tracker.metrics_path, run_dir / "plots")
    accelerator.wait_for_everyone()
    say(end_line("GRPO", step, final_dir, progress.headline(), time.perf_counter() - started), main)
    return GRPOResult(run_dir=run_dir, final_model_dir=final_dir, steps_done=step, last_metrics=metrics)


def load_prompts(cfg: GRPOConfig, tokenizer, model_config=None) -> tuple[list, list[str], dict]:
    """The training examples, their rendered prompts and the data metrics; RL for all scenarios
    mixes prompt sets (`data_mix`), each rendered with its own template. A prompt that leaves
    fewer than rollout.max_new_tokens of the model's positions is skipped, left-truncated or
    an error, as its source's data.on_long_prompt says, counted in the metrics."""
    from thinkrl.data.context import context_limit, fit_prompts, model_positions, prompt_decoder, prompt_encoder
    from thinkrl.data.loaders import announce
    from thinkrl.train.grpo_metrics import long_prompt_metrics

    positions = model_positions(model_config, tokenizer)
    if cfg.rollout.engine == "vllm" and cfg.rollout.vllm.max_model_len:  # vLLM plans for no more than this
        positions = min(positions or cfg.rollout.vllm.max_model_len, cfg.rollout.vllm.max_model_len)
    limit = context_limit(positions, cfg.rollout.max_new_tokens, "rollout.max_new_tokens")
    encode, decode = prompt_encoder(tokenizer), prompt_decoder(tokenizer)
    examples, prompts, skipped, truncated = [], [], 0, 0
    for source in [cfg.data, *cfg.data_mix]:
        loaded = load_examples(source)
        rendered = [render_prompt(ex, source.template, tokenizer, source.system_prompt) for ex in loaded]
        fitted = fit_prompts(rendered, encode, decode, limit, source.on_long_prompt, source.path)
        if fitted.report.over:
            announce(f"data: {fitted.report.summary()}")
        examples += [loaded[i] for i in fitted.kept]
        prompts += fitted.prompts
        skipped, truncated = skipped + fitted.report.skipped, truncated + fitted.report.truncated
    for ex, prompt in zip(examples, prompts):
        ex.meta["prompt_prefills_think"] = prompt_prefills_think(prompt)
    return examples, prompts, long_prompt_metrics(skipped, truncated)


def build_engine(model, tokenizer, cfg: GRPOConfig):
    """The rollout engine. The transformers engine samples from the training model itself;
    vLLM holds its own copy of the weights, synced after every update. Either way the ratio
    uses log-probs the trainer recomputes; the engine's own (of the distribution it drew
    from) measure the train/inference mismatch and weight the loss (algo.rollout_correction)."""
    return make_engine(cfg.rollout, cfg.model.name, model=model, tokenizer=tokenizer,
                       tokenizer_name=cfg.model.tokenizer, seed=cfg.run.seed)


def _sync(engine, model) -> int:
    """Push the updated weights into an engine that holds its own copy (vLLM); returns the
    bytes sent. Every process calls it: under FSDP each gathers the whole tensors from the
    shards."""
    return engine.sync_weights(model) if holds_own_weights(engine) else 0


def collect_rollout(engine, examples, prompts, order: PromptOrder, step: int, cfg: GRPOConfig,
                    rank: int = 0, world: int = 1, curriculum: PassRates | None = None) -> Rollout:
    """Sample, score and compute advantages for this process's share of one step's prompts;
    with dynamic sampling, keep sampling fresh prompts until enough groups have reward
    variance (bounded). With a curriculum the prompts are drawn by their pass rates instead
    of taken in order."""
    G, P = cfg.rollout.group_size, cfg.rollout.prompts_per_step // world
    # refills come from a stream keyed by step (and process), so resuming reproduces them
    generator = torch.Generator().manual_seed(cfg.run.seed * 7919 + step + rank * 1_000_033)
    kept_examples, kept_completions, kept_rewards, kept_scores, group_pass = [], [], [], [], []
    extra = {}
    groups_sampled = zero_var_groups = generated = 0
    rounds = 1 + (cfg.algo.max_refill_rounds if cfg.algo.dynamic_sampling else 0)

    def keep(g: int) -> None:  # group g of the round sampled last
        kept_examples.append(batch_examples[g])
        kept_completions.extend(completions[g * G:(g + 1) * G])
        kept_rewards.append(rewards[g * G:(g + 1) * G])
        kept_scores.append((scores, g))

    for round_ in range(rounds):
        if round_ == 0 and curriculum is not None:
            drawn = curriculum.draw(cfg.rollout.prompts_per_step, step)
            extra["curriculum"] = curriculum.metrics(drawn)
            index = local_share(drawn, rank, world)
        elif round_ == 0:
            index = local_share(order.take((step - 1) * cfg.rollout.prompts_per_step, cfg.rollout.prompts_per_step),
                                rank, world)
        elif curriculum is not None:
            index = curriculum.draw(P, step, round_=round_ * 1009 + rank)
        else:
            index = torch.randint(len(examples), (P,), generator=generator).tolist()
        params = step_params(cfg, step, round_)
        batch_examples = [examples[i] for i in index]
        completions, scores = sample_and_score(engine, [prompts[i] for i in index], batch_examples, params,
                                               cfg.rewards, cfg.rollout.reward_workers, cfg.rewards_by_kind,
                                               block=max(1, cfg.rollout.batch_size // G), first_prompt=rank * P)
        group_pass += group_pass_rates(index, scores.by_name, scores.reasons, cfg.pass_reward(), G, NOT_APPLICABLE)
        rewards = torch.tensor(scores.total, dtype=torch.float32)
        if cfg.algo.control == "shuffle":
            rewards = shuffle_within_groups(rewards, G, generator)
        flat = zero_variance(rewards, G)
        groups_sampled += len(index)
        zero_var_groups += int(flat.sum())
        generated += sum(len(c.completion_ids) for c in completions)
        for g in range(len(index)):
            if not (cfg.algo.dynamic_sampling and flat[g]):
                keep(g)
        if len(kept_examples) >= P:
            break
    if world > 1 or not kept_examples:
        # Top up with the last round's flat groups (advantage 0). With nothing kept, there is
        # still a batch to step on; under a launch, every process must train on P groups, or
        # one would run fewer forward passes and collectives than the others wait for.
        skipped = [g for g in range(len(index)) if cfg.algo.dynamic_sampling and flat[g]]
        for g in skipped[:max(0, P - len(kept_examples))]:
            keep(g)
    kept_examples, kept_completions = kept_examples[:P], kept_completions[:P * G]
    kept_rewards, kept_scores = kept_rewards[:P], kept_scores[:P]
    rewards = torch.cat(kept_rewards)
    lengths = torch.tensor([len(c.completion_ids) for c in kept_completions], dtype=torch.float32)
    advantages = ADVANTAGES.call(cfg.algo.advantage, cfg.algo.advantage_call_options(), rewards=rewards,
                                 group_size=G, lengths=lengths)
    return Rollout(examples=kept_examples, completions=kept_completions, rewards=rewards, advantages=advantages,
                   scores=_merge_scores(kept_scores, G), group_size=G, groups_sampled=groups_sampled,
                   zero_variance_groups=zero_var_groups, generated_tokens=generated, group_pass=group_pass,
                   extra=extra)


def update_policy(accelerator, model, reference, optimizer, scheduler, rollout: Rollout, pad_id: int,
                  cfg: GRPOConfig, entropy_coef: float | None = None) -> dict:
    """mu passes over the rollout batch, each split into optimiser steps of micro-batches.
    `entropy_coef`: the entropy bonus's coefficient this step (None: algo.entropy_coef)."""
    device = accelerator.device
    world = accelerator.num_processes
    policy = accelerator.unwrap_model(model)
    batch = build_policy_batch(rollout.completions, pad_id).to(device)
    advantages = rollout.advantages.to(device)
    temperature, chunk_tokens = cfg.rollout.temperature, cfg.optim.logprob_chunk_tokens
    lengths = batch.attention_mask.sum(dim=1).tolist()

    padded = not packs_rows(policy)

    def micro_batches(rows: list[int]) -> list[list[int]]:
        """Longest rows first, so padded micro-batches hold rows of similar length; as many on
        every process (FSDP: each forward pass is a collective)."""
        rows = sorted(rows, key=lambda r: -lengths[r])
        sizes = [lengths[r] for r in rows]
        groups = token_microbatches(sizes, cfg.optim.max_tokens_per_microbatch, cfg.optim.micro_batch_size, padded)
        groups = split_to(groups, sizes, max_over_processes(accelerator, len(groups)))
        return [[rows[i] for i in group] for group in groups]

    # Old log-probs are taken once per rollout. When one optimiser step consumes the whole
    # batch the policy has not moved before it, so the ratio is exactly 1 and logp.detach()
    # serves, saving a forward pass; with more steps, the later ones need the sampler's.
    several_steps = cfg.algo.mu * cfg.optim.updates_per_pass > 1
    all_rows = micro_batches(list(range(len(batch)))) if several_steps or cfg.algo.beta > 0 else []
    old_logp = frozen_logprobs(policy, batch, temperature, all_rows, chunk_tokens) if several_steps else None
    ref_logp = None
    if cfg.algo.beta > 0:
        if reference is None:  # LoRA: the reference is the base, adapter switched off
            ref_logp = frozen_logprobs(policy, batch, temperature, all_rows, chunk_tokens, disable_adapter=True)
        else:
            ref_logp = frozen_logprobs(reference, batch, temperature, all_rows, chunk_tokens)
    entropy_coef = cfg.algo.entropy_coef if entropy_coef is None else entropy_coef
    entropy_grad = entropy_coef > 0
    per_token_unit = AGGREGATIONS.meta(cfg.algo.aggregation)["unit"] == "tokens"
    loss_options = cfg.algo.loss_call_options()
    correction, correction_options = cfg.rollout_correction(), cfg.algo.rollout_correction_options
    sampler_logp = sampler_logprobs(batch, rollout.completions)
    ratio_max, masked_rows, corrected_rows = 0.0, 0.0, 0
    model.train()
    generator = torch.Generator().manual_seed(cfg.run.seed + len(batch))
    totals: dict[str, float] = {}
    seen_tokens = 0.0
    grad_norms = []
    chunk = len(batch) // cfg.optim.updates_per_pass
    for _ in range(cfg.algo.mu):
        order = torch.randperm(len(batch), generator=generator)
        for start in range(0, len(batch), chunk):
            update_index = order[start:start + chunk]
            update_tokens = batch.loss_mask[update_index].sum()
            if per_token_unit:  # token means are over the tokens of all processes
                update_tokens = accelerator.reduce(update_tokens, reduction="sum") / world
            update_tokens = float(update_tokens.clamp(min=1))
            groups = micro_batches(update_index.tolist())
            for number, group in enumerate(groups):
                index = torch.tensor(group)
                part = batch.select(index)
                width = part.loss_mask.shape[1]
                # gradients are averaged over processes once, on the update's last micro-batch
                sync = number == len(groups) - 1
                with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                    logp, entropy = policy_logprobs(model, part, temperature, with_entropy=True,
                                                    chunk_tokens=chunk_tokens, entropy_grad=entropy_grad)
                    old = old_logp[index, :width] if old_logp is not None else logp.detach()
                    ref = ref_logp[index, :width] if ref_logp is not None else None
                    weights, mismatch = None, {}
                    if sampler_logp is not None:  # the engine's own log-probs: how far off-policy, and the fix
                        sampled = sampler_logp[index, :width]
                        weights = CORRECTIONS.call(correction, correction_options, old_logp=old,
                                                   sampler_logp=sampled, mask=part.loss_mask)
                        mismatch = mismatch_stats(old, sampled, part.loss_mask, weights)
                        ratio_max = max(ratio_max, mismatch.pop("mismatch/ratio_max"))
                        masked_rows += mismatch.pop("mismatch/masked_sequence_share") * len(index)
                        corrected_rows += len(index)
                    loss, stats = policy_loss(logp, old, advantages[index], part.loss_mask, ref_logp=ref,
                                              beta=cfg.algo.beta, aggregation=cfg.algo.aggregation,
                                              max_len_norm=cfg.rollout.max_new_tokens, loss=cfg.algo.loss,
                                              loss_options=loss_options, entropy=entropy,
                                              entropy_coef=entropy_coef, top_entropy=cfg.algo.top_entropy,
                                              sample_weights=weights)
                    tokens = float(part.loss_mask.sum())
                    # Micro-batch losses are means over their own rows or tokens; weighting them
                    # by their share makes the accumulated gradient that of the whole update batch.
                    weight = tokens / update_tokens if per_token_unit else len(index) / len(update_index)
                    accelerator.backward(loss * weight)
                stats = {**stats, **mismatch}
                stats["loss"] = float(loss.detach())
                stats["entropy"] = float((entropy.detach() * part.loss_mask).sum() / part.loss_mask.sum().clamp(min=1))
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + float(value) * tokens
                seen_tokens += tokens
            params = [p for p in model.parameters() if p.requires_grad]
            grad_norms.append(float(accelerator.clip_grad_norm_(params, cfg.optim.max_grad_norm)))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    out = reduce_weighted(accelerator, totals, seen_tokens)
    out["grad_norm"] = sum(grad_norms) / len(grad_norms)
    if sampler_logp is not None:  # every process has one: the engine is the same kind everywhere
        out["mismatch/ratio_max"] = max_over_processes(accelerator, float(ratio_max))
        rows = accelerator.reduce(torch.tensor([masked_rows, corrected_rows], dtype=torch.float64, device=device),
                                  reduction="sum")
        out["mismatch/masked_sequence_share"] = float(rows[0] / rows[1].clamp(min=1))
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
