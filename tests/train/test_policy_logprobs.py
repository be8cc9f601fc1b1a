"""Log-probs without full-vocabulary logits, and packed token-budget micro-batches: the same
numbers (loss, gradients, the whole GRPO update) as the padded full-logits path, within 1e-5
in float32, for tied and untied heads, LoRA and the reference/old-policy passes; and the
chunked head never holds a [tokens, vocabulary] tensor."""

from __future__ import annotations

import copy

import pytest
import torch
from accelerate import Accelerator
from test_train_grpo import small_config
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from thinkrl.algos.head_logprobs import head_logprobs
from thinkrl.rollout.base import Completion
from thinkrl.train.grpo import update_policy
from thinkrl.train.microbatches import split_to, token_microbatches
from thinkrl.train.model_setup import build_optimizer
from thinkrl.train.policy import build_policy_batch, frozen_logprobs, policy_logprobs
from thinkrl.train.rollouts import Rollout

VOCAB = 300


def random_model(arch: str, tied: bool):
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    torch.manual_seed(0)
    config = config_cls(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                        tie_word_embeddings=tied, pad_token_id=0)
    return model_cls(config).float()


def completions(count: int, seed: int = 1) -> list[Completion]:
    """Rows of very different prompt and completion lengths (padding matters)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        prompt = torch.randint(1, VOCAB, (int(torch.randint(2, 15, (1,), generator=g)),), generator=g).tolist()
        answer = torch.randint(1, VOCAB, (int(torch.randint(1, 25, (1,), generator=g)),), generator=g).tolist()
        out.append(Completion(prompt_index=i, text="", prompt_ids=prompt, completion_ids=answer))
    return out


def loss_and_grads(model, batch, chunk_tokens: int, temperature: float = 0.7, pack: bool | None = None):
    model.zero_grad()
    logp, entropy = policy_logprobs(model, batch, temperature, with_entropy=True, chunk_tokens=chunk_tokens, pack=pack)
    weights = torch.randn(logp.shape, generator=torch.Generator().manual_seed(3))
    loss = (logp * weights * batch.loss_mask).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), entropy, float(loss.detach()), grads


def assert_same(a, b, tol: float = 1e-5) -> None:
    (logp_a, ent_a, loss_a, grads_a), (logp_b, ent_b, loss_b, grads_b) = a, b
    assert torch.allclose(logp_a, logp_b, atol=tol, rtol=0)
    assert torch.allclose(ent_a, ent_b, atol=tol, rtol=0)
    assert abs(loss_a - loss_b) <= tol * max(1.0, abs(loss_a))
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=tol, rtol=0), name


def test_head_logprobs_match_log_softmax_and_its_gradients_are_exact():
    torch.manual_seed(0)
    n, h, v = 23, 8, 57
    hidden = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(v, (n,))
    logp, entropy = head_logprobs(hidden, weight, targets, 0.6, bias, chunk_tokens=5)
    full = torch.log_softmax((hidden @ weight.t() + bias) / 0.6, dim=-1)
    assert torch.allclose(logp, full.gather(1, targets[:, None])[:, 0], atol=1e-12)
    assert torch.allclose(entropy, -(full.exp() * full).sum(-1), atol=1e-12)
    # both outputs' gradients (the entropy's serves an entropy bonus)
    assert torch.autograd.gradcheck(lambda a, w, b: head_logprobs(a, w, targets, 0.6, b, chunk_tokens=4),
                                    (hidden, weight, bias))


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_the_chunked_head_never_holds_the_tokens_by_vocabulary_logits():
    n, h, v, chunk = 256, 8, 4000, 16
    hidden = torch.randn(n, h, requires_grad=True)
    weight = torch.randn(v, h, requires_grad=True)
    targets = torch.randint(v, (n,))
    with LargestTensor() as seen:
        logp, entropy = head_logprobs(hidden, weight, targets, chunk_tokens=chunk)
        (logp.sum() + entropy.sum()).backward()
    assert seen.largest <= max(chunk * v, v * h), f"a tensor of {seen.largest} elements (all logits: {n * v})"


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("arch, tied", [("qwen2", True), ("llama", False)])
def test_chunked_logprobs_packed_or_padded_equal_the_full_logits_path(arch, tied, pack):
    model = random_model(arch, tied)
    batch = build_policy_batch(completions(6), pad_id=0)
    assert_same(loss_and_grads(model, batch, chunk_tokens=0), loss_and_grads(model, batch, chunk_tokens=7, pack=pack))


def test_with_lora_the_adapter_gradients_and_the_reference_pass_agree():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(random_model("qwen2", True), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                                    init_lora_weights=False))
    batch = build_policy_batch(completions(5, seed=4), pad_id=0)
    assert_same(loss_and_grads(model, batch, chunk_tokens=0), loss_and_grads(model, batch, chunk_tokens=5, pack=True))
    assert_same(loss_and_grads(model, batch, chunk_tokens=0), loss_and_grads(model, batch, chunk_tokens=5, pack=False))
    padded = frozen_logprobs(model, batch, 0.7, chunk_tokens=0, disable_adapter=True)
    packed = frozen_logprobs(model, batch, 0.7, [[0, 3], [1], [2, 4]], chunk_tokens=5, disable_adapter=True)
    assert torch.allclose(padded, packed, atol=1e-5)


def test_bf16_autocast_stays_close_to_float32():
    model = random_model("qwen2", True)
    batch = build_policy_batch(completions(4), pad_id=0)
    exact, _ = policy_logprobs(model, batch, 1.0, chunk_tokens=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = policy_logprobs(model, batch, 1.0, chunk_tokens=8)
    assert low.dtype == torch.float32 and float((exact - low).abs().max()) < 0.1


def test_token_budget_groups_respect_rows_tokens_and_order():
    lengths = [5, 9, 3, 30, 2, 2, 8]
    groups = token_microbatches(lengths, max_tokens=12, max_rows=2)
    assert groups == [[0], [1, 2], [3], [4, 5], [6]]
    # padded, a group costs rows x its longest row: 9 and 3 cost 18
    assert token_microbatches(lengths, max_tokens=12, max_rows=3, padded=True) == [[0], [1], [2], [3], [4, 5], [6]]
    assert token_microbatches([8, 8, 6, 5, 2, 2, 1], max_tokens=16, max_rows=8, padded=True) == [[0, 1], [2, 3], [4, 5, 6]]
    assert [i for g in groups for i in g] == list(range(len(lengths)))
    more = split_to(groups, lengths, 7)
    assert len(more) == 7 and [i for g in more for i in g] == list(range(len(lengths)))
    with pytest.raises(ValueError):
        split_to(groups, lengths, 8)


def fixed_rollout(rows: int = 12) -> Rollout:
    """A rollout of random completions in the tiny model's vocabulary, advantages random."""
    from thinkrl.rewards import RewardScores

    samples = completions(rows, seed=7)
    for c in samples:
        c.prompt_ids = [t % 90 + 3 for t in c.prompt_ids]
        c.completion_ids = [t % 90 + 3 for t in c.completion_ids]
    rewards = torch.randn(len(samples), generator=torch.Generator().manual_seed(5))
    return Rollout(examples=[None] * (rows // 4), completions=samples, rewards=rewards, advantages=rewards.clone(),
                   scores=RewardScores(total=rewards.tolist(), by_name={}, reasons={}), group_size=4)


@pytest.mark.parametrize("aggregation", ["sequence", "token", "dr_grpo"])
def test_a_grpo_update_with_packed_micro_batches_equals_the_padded_one(tiny_random_model, tmp_path, aggregation):
    from thinkrl.models import load_model

    base = load_model(str(tiny_random_model))
    rollout = fixed_rollout()
    weights = []
    for settings in (["optim.logprob_chunk_tokens=0", "optim.micro_batch_size=12"],
                     ["optim.logprob_chunk_tokens=5", "optim.max_tokens_per_microbatch=40", "optim.micro_batch_size=3"]):
        cfg = small_config(tiny_random_model, tmp_path, f"algo.aggregation={aggregation}", "algo.mu=2", "algo.beta=0.05",
                           "optim.updates_per_pass=2", "rollout.temperature=0.8", *settings)
        model = copy.deepcopy(base)
        reference = copy.deepcopy(base).eval()
        optimizer, scheduler = build_optimizer(model, cfg.optim, total_updates=4)
        update_policy(Accelerator(cpu=True), model, reference, optimizer, scheduler, rollout, 0, cfg)
        weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
    padded, packed = weights
    assert any(not torch.equal(padded[n], p) for n, p in base.named_parameters())
    for name in padded:
        assert torch.allclose(padded[name], packed[name], atol=1e-5, rtol=0), name


def test_later_optimizer_steps_of_one_batch_are_clipped_against_the_sampling_policy(tiny_random_model, tmp_path):
    """mu=1 with two optimiser steps per pass: the second step's rows were sampled by the
    policy before the first step, so their ratio is not 1 and clipping applies to them."""
    from thinkrl.models import load_model

    model = load_model(str(tiny_random_model))
    cfg = small_config(tiny_random_model, tmp_path, "algo.mu=1", "optim.updates_per_pass=2", "optim.lr=0.01",
                       "algo.eps_low=0.001", "algo.eps_high=0.001")
    optimizer, scheduler = build_optimizer(model, cfg.optim, total_updates=2)
    stats = update_policy(Accelerator(cpu=True), model, None, optimizer, scheduler, fixed_rollout(), 0, cfg)
    assert stats["clip_fraction"] > 0
    assert stats["ratio_mean"] != 1.0
