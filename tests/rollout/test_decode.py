"""thinkrl's decoding loop and sampler (rollout/decode.py) on tiny random models: greedy ids
identical to `model.generate`, finished rows leaving the batch, and sampled frequencies that
match the distribution they claim (with bounds a fixed seed cannot flake on)."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from transformers.cache_utils import DynamicLayer
from transformers.generation.logits_process import TopPLogitsWarper

from thinkrl.models import load_model, load_tokenizer
from thinkrl.rollout.base import SamplingParams
from thinkrl.rollout.decode import BLOCK, ReservedLayer, compacted_order, nucleus_mask, sample_tokens
from thinkrl.rollout.transformers_engine import TransformersEngine

PROMPTS = ["12+3=", "User: what is 7*8? Assistant:", "a", "Hello there, how many apples are left over?"]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request, tmp_path_factory):
    from conftest import build_tiny_random_model

    folder = build_tiny_random_model(tmp_path_factory.mktemp(request.param), arch=request.param)
    return load_model(str(folder)), load_tokenizer(str(folder))


def greedy(**kw) -> SamplingParams:
    return SamplingParams(**{"n": 2, "max_new_tokens": 24, "temperature": 0.0, **kw})


def both(model, tokenizer, prompts, params, **kw):
    """The same request through the new decoder and through model.generate."""
    new = TransformersEngine(model, tokenizer, decoder="thinkrl", **kw).generate(prompts, params)
    old = TransformersEngine(model, tokenizer, decoder="generate", **kw).generate(prompts, params)
    return new, old


def assert_same(new, old):
    assert [(c.prompt_index, c.completion_ids, c.text, c.finish_reason) for c in new] == \
           [(c.prompt_index, c.completion_ids, c.text, c.finish_reason) for c in old]


def with_early_eos(model, tokenizer):
    """A copy of the model that also ends at a token greedy emits a few tokens into some
    answers and never in others, so rows of one batch end at different steps."""
    reference = TransformersEngine(model, tokenizer, decoder="generate").generate(PROMPTS, greedy(n=1))
    answers = [c.completion_ids for c in reference]
    token = next(t for ids in answers for t in ids[2:12]
                 if t not in ids[:2] and any(t not in other for other in answers))
    early = copy.deepcopy(model)
    early.generation_config.eos_token_id = [tokenizer.eos_token_id, token]
    return early


def test_greedy_ids_equal_generate_with_rows_ending_early(tiny):
    model, tokenizer = tiny
    new, old = both(with_early_eos(model, tokenizer), tokenizer, PROMPTS, greedy())
    assert_same(new, old)
    lengths = {len(c.completion_ids) for c in new}
    assert {c.finish_reason for c in new} == {"stop", "length"} and len(lengths) > 2
    assert [c.prompt_index for c in new] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_greedy_ids_equal_generate_with_stop_strings(tiny):
    model, tokenizer = tiny
    full = TransformersEngine(model, tokenizer).generate(PROMPTS, greedy(n=1))
    text = max((c.text for c in full), key=len)
    stop = text[len(text) // 3: len(text) // 3 + 2]
    new, old = both(model, tokenizer, PROMPTS, greedy(stop=("never-produced", stop)))
    assert_same(new, old)
    assert any(c.finish_reason == "stop" and c.text.endswith(stop) for c in new)
    # Chunks of 3 rows: the same answers, chunk by chunk.
    chunked, _ = both(model, tokenizer, PROMPTS, greedy(stop=(stop,)), batch_size=3)
    assert [c.completion_ids for c in chunked] == [c.completion_ids for c in new]


def test_finished_rows_leave_the_batch(tiny):
    model, tokenizer = tiny
    model = with_early_eos(model, tokenizer)
    sizes: list[tuple[int, int]] = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        outs = TransformersEngine(model, tokenizer).generate(PROMPTS, greedy())
    finally:
        hook.remove()
    prefill, steps = sizes[0], [rows for rows, width in sizes[1:]]
    assert prefill[0] == len(outs) and prefill[1] == max(len(c.prompt_ids) for c in outs)
    assert all(width == 1 for _, width in sizes[1:])
    assert steps == sorted(steps, reverse=True) and steps[-1] < steps[0] <= len(outs)
    # A row takes part in one step per token after its first: no step runs a finished row.
    assert sum(steps) == sum(len(c.completion_ids) - 1 for c in outs)
    assert len(steps) == max(len(c.completion_ids) for c in outs) - 1


def test_greedy_ids_equal_generate_with_sliding_window_layers(tmp_path):
    """A model mixing full-attention layers (reserved buffers) with sliding-window ones
    (transformers' own cache layers, compacted by index): the same ids as generate."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from thinkrl.tiny.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=6,
                         max_window_layers=1, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = load_model(str(tmp_path))
    assert set(model.config.layer_types) == {"full_attention", "sliding_attention"}
    new, old = both(with_early_eos(model, tokenizer), tokenizer, PROMPTS, greedy())
    assert_same(new, old)


def test_compacted_order_keeps_every_live_row_and_moves_only_those_past_the_end():
    for done in itertools.product([False, True], repeat=7):
        order = compacted_order(done)
        live = [i for i, d in enumerate(done) if not d]
        assert sorted(order) == live
        assert all(order[j] == j for j in range(len(order)) if not done[j])


def test_reserved_layer_holds_what_a_dynamic_layer_holds():
    """The same appends, row selections (compaction by order and by index), repeats and
    crops on a ReservedLayer and on transformers' DynamicLayer give the same keys and values,
    including past the reserved capacity."""
    torch.manual_seed(0)
    ours, theirs = ReservedLayer(capacity=5), DynamicLayer()

    def append(rows: int, tokens: int) -> None:
        k, v = torch.randn(rows, 2, tokens, 3), torch.randn(rows, 2, tokens, 3)
        got, want = ours.update(k, v), theirs.update(k, v)
        for a, b in zip(got, want):
            assert torch.equal(a, b)

    def check() -> None:
        assert ours.get_seq_length() == theirs.get_seq_length()
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)

    append(6, 3)
    append(6, 1)
    order = compacted_order([False, True, False, True, False, False])
    ours.keep_rows(order)
    theirs.batch_select_indices(torch.tensor(order))
    check()
    append(4, 1)
    append(4, 2)  # 7 positions: past the capacity of 5
    check()
    indices = torch.tensor([3, 0])
    ours.batch_select_indices(indices)
    theirs.batch_select_indices(indices)
    check()
    ours.batch_repeat_interleave(2)
    theirs.batch_repeat_interleave(2)
    append(4, 1)
    check()
    ours.crop(-3)
    theirs.crop(-3)
    check()
    append(4, 1)
    check()
    with pytest.raises(IndexError):
        ours.keep_rows([0, 9])


def test_lora_adapter_is_active_in_the_decoding_loop(tiny):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    torch.manual_seed(3)
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                init_lora_weights=False))
    new, old = both(peft_model, tokenizer, PROMPTS, greedy(n=1))
    assert_same(new, old)
    base = TransformersEngine(model, tokenizer).generate(PROMPTS, greedy(n=1))
    assert [c.completion_ids for c in new] != [c.completion_ids for c in base]


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_seeded_sampling_is_reproducible_and_leaves_the_global_rng_alone(tiny, top_p):
    model, tokenizer = tiny
    engine = TransformersEngine(model, tokenizer)
    params = SamplingParams(n=4, max_new_tokens=16, temperature=1.0, top_p=top_p, seed=11)
    torch.manual_seed(5)
    first = engine.generate(PROMPTS, params)
    after = torch.rand(3)
    torch.manual_seed(5)
    again = engine.generate(PROMPTS, params)
    assert torch.equal(torch.rand(3), after)
    assert [c.completion_ids for c in first] == [c.completion_ids for c in again]
    assert len({tuple(c.completion_ids) for c in first}) > len(PROMPTS)  # samples of a group differ
    other = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=16, temperature=1.0, top_p=top_p, seed=12))
    assert [c.completion_ids for c in other] != [c.completion_ids for c in first]


# ---------------------------------------------------------------- the sampler alone


def draw(logits: torch.Tensor, draws: int, temperature: float, top_p: float = 1.0, rows: int = 4096) -> torch.Tensor:
    """Token counts of `draws` samples from one logits vector (a batch of identical rows)."""
    counts = torch.zeros(logits.shape[0], dtype=torch.long)
    torch.manual_seed(1234)
    for start in range(0, draws, rows):
        batch = logits.expand(min(rows, draws - start), -1)
        counts += torch.bincount(sample_tokens(batch, temperature, top_p), minlength=logits.shape[0])
    return counts


def assert_frequencies_match(counts: torch.Tensor, probs: torch.Tensor) -> None:
    """Counts against expected probabilities: tokens of tiny probability are pooled (sorted
    by probability) into buckets expecting >= 50 draws, where the normal approximation
    holds; every bucket within 5 sigma, and chi-square within 5 sigma of its mean."""
    draws = int(counts.sum())
    probs = probs.double() / probs.sum()
    assert int(counts[probs == 0].sum()) == 0  # nothing outside the support, ever
    order = torch.argsort(probs[probs > 0], descending=True)
    observed, expected = counts[probs > 0][order].double(), probs[probs > 0][order] * draws
    buckets_o, buckets_e, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(observed.tolist(), expected.tolist()):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= 50:
            buckets_o.append(acc_o), buckets_e.append(acc_e)
            acc_o = acc_e = 0.0
    if acc_e:
        buckets_o[-1] += acc_o
        buckets_e[-1] += acc_e
    o, e = torch.tensor(buckets_o), torch.tensor(buckets_e)
    sigma = (e * (1 - e / draws)).sqrt()
    assert ((o - e).abs() <= 5 * sigma).all(), ((o - e) / sigma).abs().max()
    chi2, df = float(((o - e) ** 2 / e).sum()), len(e) - 1
    assert chi2 <= df + 5 * math.sqrt(2 * df), (chi2, df)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_full_vocabulary_draws_follow_the_softmax(temperature):
    # 2.5 blocks: two whole ones and a partial last one, so every path of the sampler is hit.
    vocab = 2 * BLOCK + BLOCK // 2
    logits = torch.randn(vocab, generator=torch.Generator().manual_seed(0)) * 2
    logits[-1] = logits.max() + 1  # the very last token is the likeliest
    logits[BLOCK + 5] = -float("inf")  # a banned token is never drawn
    counts = draw(logits, 200_000, temperature)
    assert_frequencies_match(counts, torch.softmax(logits.double() / temperature, dim=-1))


def test_real_vocabulary_draws_follow_the_softmax():
    """The 151,665-token Qwen2.5 vocabulary: mass on a few tokens spread over the blocks
    (first, last, inside the short last block), the rest on a long flat tail."""
    vocab = 151_665
    logits = torch.randn(vocab, generator=torch.Generator().manual_seed(1))
    heavy = torch.tensor([0, 1, 1023, 1024, 70_000, 151_551, vocab - 2, vocab - 1])
    logits[heavy] += torch.linspace(9, 11, len(heavy))
    counts = draw(logits, 16_384, 1.0, rows=512)
    assert_frequencies_match(counts, torch.softmax(logits.double(), dim=-1))


def transformers_nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    return TopPLogitsWarper(top_p)(None, logits.float()) != -float("inf")


@pytest.mark.parametrize("scale", [8.0, 2.0, 0.3])  # nuclei of a few, hundreds and thousands of tokens
def test_nucleus_draws_follow_the_renormalised_nucleus(scale):
    logits = torch.randn(3000, generator=torch.Generator().manual_seed(2)) * scale
    kept = transformers_nucleus(logits[None], 0.9)[0]
    assert torch.equal(nucleus_mask(logits[None], 0.9)[0], kept)
    counts = draw(logits, 40_000, 1.0, top_p=0.9)
    assert_frequencies_match(counts, torch.softmax(logits.double(), dim=-1) * kept)


@pytest.mark.parametrize("top_p", [1e-9, 0.1, 0.5, 0.9, 0.95, 0.999])
def test_nucleus_is_the_one_transformers_keeps(top_p):
    """Random rows of every sharpness, with exact ties (logits on a coarse grid) and near-ties
    (a 1e-6 jitter): the same tokens as TopPLogitsWarper, except that on the nucleus edge
    equally likely tokens may be split differently (both split them in their sort's order)."""
    gen = torch.Generator().manual_seed(3)
    scales = torch.tensor([0.1, 0.5, 1, 2, 4, 8, 16, 32]).repeat_interleave(4)[:, None]
    logits = torch.randn(len(scales), 5000, generator=gen) * scales
    logits[::4] = (logits[::4] * 2).round() / 2  # ties
    logits[1::4] += torch.randn(logits[1::4].shape, generator=gen) * 1e-6  # near-ties
    ours, theirs = nucleus_mask(logits, top_p), transformers_nucleus(logits, top_p)
    assert torch.equal(ours.sum(-1), theirs.sum(-1))
    assert (ours.sum(-1) >= 1).all()
    for row in range(len(logits)):
        edge = logits[row][ours[row]].min()
        differ = ours[row] ^ theirs[row]
        assert (logits[row][differ] == edge).all()


def test_greedy_is_the_first_argmax_and_draws_never_leave_a_one_token_support():
    logits = torch.tensor([[0.0, 3.0, 3.0, -1.0], [5.0, -float("inf"), -float("inf"), -float("inf")]])
    assert sample_tokens(logits, 0.0).tolist() == [1, 0]
    torch.manual_seed(0)
    for top_p in (1.0, 0.5):
        assert (sample_tokens(logits[1:].expand(1000, -1), 1.0, top_p) == 0).all()
