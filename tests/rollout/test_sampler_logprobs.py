"""Every engine reports, per completion token, the log-prob under the distribution it drew
from: temperature applied, and with top-p the truncated, renormalised nucleus (the case
frameworks get wrong when they report the full softmax's log-prob)."""

from __future__ import annotations

import pytest
import torch

from thinkrl.models import load_model, load_tokenizer
from thinkrl.rollout.base import SamplingParams
from thinkrl.rollout.decode import nucleus_mask, sample_tokens
from thinkrl.rollout.transformers_engine import TransformersEngine
from thinkrl.train.policy import build_policy_batch, frozen_logprobs, sampler_logprobs

PROMPTS = ["12+3=", "User: what is 7*8? Assistant:", "a"]


def truncated_logprob(logits: torch.Tensor, tokens: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """log q(token) for q = softmax(logits / T) restricted to the top-p nucleus, renormalised."""
    scaled = logits.double() / temperature
    if top_p < 1:
        scaled = scaled.masked_fill(~nucleus_mask(scaled.float(), top_p), float("-inf"))
    return torch.log_softmax(scaled, dim=-1).gather(1, tokens[:, None]).squeeze(1)


@pytest.mark.parametrize("vocab", [300, 151_646])
@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 1.0), (0.7, 0.9), (1.3, 0.5)])
def test_the_sampler_reports_the_log_prob_of_the_distribution_it_drew_from(vocab, temperature, top_p):
    logits = torch.randn(6, vocab, generator=torch.Generator().manual_seed(vocab)) * 3
    torch.manual_seed(0)
    tokens, logprobs = sample_tokens(logits, temperature, top_p, with_logprobs=True)
    want = truncated_logprob(logits, tokens, temperature, top_p)
    assert torch.allclose(logprobs.double(), want, atol=1e-5), (logprobs, want)
    if top_p < 1:  # the truncated distribution's log-prob is above the full softmax's
        full = truncated_logprob(logits, tokens, temperature, 1.0)
        assert (logprobs.double() > full + 1e-6).all()
    greedy, zero = sample_tokens(logits, 0.0, with_logprobs=True)
    assert torch.equal(greedy, logits.argmax(-1)) and (zero == 0).all()


@pytest.fixture(scope="module")
def tiny(tiny_random_model):
    return load_model(str(tiny_random_model)), load_tokenizer(str(tiny_random_model))


@pytest.mark.parametrize("decoder", ["thinkrl", "generate"])
def test_engine_log_probs_equal_the_trainers_at_temperature_one(tiny, decoder):
    model, tokenizer = tiny
    engine = TransformersEngine(model, tokenizer, decoder=decoder)
    completions = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=16, temperature=1.0, seed=3))
    assert all(c.logprobs is not None and len(c.logprobs) == len(c.completion_ids) for c in completions)
    batch = build_policy_batch(completions, tokenizer.pad_token_id)
    trainer = frozen_logprobs(model, batch, temperature=1.0)
    sampler = sampler_logprobs(batch, completions)
    mask = batch.loss_mask.bool()
    assert mask.sum() > 20
    assert torch.allclose(trainer[mask], sampler[mask], atol=1e-5)


@pytest.mark.parametrize("decoder", ["thinkrl", "generate"])
def test_engine_log_probs_under_top_p_are_the_renormalised_nucleus(tiny, decoder):
    model, tokenizer = tiny
    temperature, top_p = 0.8, 0.7
    engine = TransformersEngine(model, tokenizer, decoder=decoder)
    completions = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=16, temperature=temperature,
                                                          top_p=top_p, seed=5))
    for c in completions:
        ids = torch.tensor([c.prompt_ids + c.completion_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(c.prompt_ids) - 1:-1]
        want = truncated_logprob(logits, torch.tensor(c.completion_ids), temperature, top_p)
        assert torch.allclose(torch.tensor(c.logprobs, dtype=torch.float64), want, atol=1e-4)
    batch = build_policy_batch(completions, tokenizer.pad_token_id)
    trainer = frozen_logprobs(model, batch, temperature=temperature)  # the full softmax: above the nucleus's
    gap = sampler_logprobs(batch, completions) - trainer
    assert (gap[batch.loss_mask.bool()] >= -1e-5).all() and gap.max() > 1e-3
