"""TransformersEngine on tiny random models: the real Qwen tokenizer, and a char tokenizer with bos."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from thinkrl.rollout.base import SamplingParams
from thinkrl.rollout.transformers_engine import TransformersEngine

SHORT = "Hello there"
LONG = "The quick brown fox jumps over the lazy dog, and then it sat down to think about"


@pytest.fixture(scope="module")
def qwen_tok(qwen_tokenizer_dir):
    return AutoTokenizer.from_pretrained(qwen_tokenizer_dir)


@pytest.fixture()
def qwen_model(qwen_tok):
    torch.manual_seed(0)
    # A wide init spreads the logits, so greedy choices are far from ties and padding
    # cannot flip them through float rounding.
    config = Qwen2Config(vocab_size=len(qwen_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, initializer_range=0.5)
    return Qwen2ForCausalLM(config)


def greedy(n: int = 1, max_new_tokens: int = 12, **kw) -> SamplingParams:
    return SamplingParams(n=n, max_new_tokens=max_new_tokens, temperature=0.0, **kw)


def test_left_padding_gives_the_same_greedy_answer(qwen_model, qwen_tok):
    engine = TransformersEngine(qwen_model, qwen_tok)
    alone = engine.generate([SHORT], greedy())[0]
    batched = engine.generate([LONG, SHORT], greedy())
    assert len(qwen_tok(LONG)["input_ids"]) > len(qwen_tok(SHORT)["input_ids"])
    assert batched[1].completion_ids == alone.completion_ids
    assert batched[1].text == alone.text
    assert batched[0].completion_ids == engine.generate([LONG], greedy())[0].completion_ids
    # No eos in 12 random tokens: the cap ends them, and they are reported as truncated.
    assert all(c.finish_reason == "length" and c.truncated and len(c.completion_ids) == 12 for c in batched)


def test_completions_are_grouped_by_prompt_and_chunked(qwen_model, qwen_tok):
    prompts = [SHORT, LONG, "2 + 2 ="]
    whole = TransformersEngine(qwen_model, qwen_tok, batch_size=64).generate(prompts, greedy(n=2, max_new_tokens=6))
    progress = []
    engine = TransformersEngine(qwen_model, qwen_tok, batch_size=4,
                                on_batch=lambda done, total: progress.append((done, total)))
    chunked = engine.generate(prompts, greedy(n=2, max_new_tokens=6))
    assert progress == [(4, 6), (6, 6)]
    assert [c.prompt_index for c in whole] == [0, 0, 1, 1, 2, 2]
    assert [c.completion_ids for c in chunked] == [c.completion_ids for c in whole]
    for c in whole:
        assert c.prompt_ids == qwen_tok(prompts[c.prompt_index], add_special_tokens=False)["input_ids"]
        assert qwen_tok.decode(c.completion_ids) == c.text
    assert whole[0].completion_ids == whole[1].completion_ids  # greedy: the n copies agree


def test_eos_ends_a_row_and_is_kept_in_its_ids(qwen_model, qwen_tok):
    reference = TransformersEngine(qwen_model, qwen_tok).generate([SHORT, LONG], greedy())
    ids = reference[0].completion_ids
    # Declare as eos a token the model emits mid-answer for SHORT and never for LONG.
    j = next(i for i in range(3, len(ids)) if ids[i] not in ids[:i] and ids[i] not in reference[1].completion_ids)
    model = copy.deepcopy(qwen_model)
    model.generation_config.eos_token_id = ids[j]
    engine = TransformersEngine(model, qwen_tok)
    short, long = engine.generate([SHORT, LONG], greedy())
    assert short.completion_ids == ids[:j + 1]  # eos included, no padding after it
    assert short.finish_reason == "stop" and not short.truncated
    assert short.text == qwen_tok.decode(ids[:j])  # eos is not part of the text
    assert long.completion_ids == reference[1].completion_ids and long.finish_reason == "length"


def test_stop_string_truncates_text_and_ids(qwen_model, qwen_tok):
    engine = TransformersEngine(qwen_model, qwen_tok)
    full = engine.generate([LONG], greedy())[0]
    stop = full.text[len(full.text) // 3: len(full.text) // 3 + 3]
    cut = full.text.index(stop) + len(stop)
    stopped, other = engine.generate([LONG, SHORT], greedy(stop=("never-produced", stop)))
    assert stopped.text == full.text[:cut]
    assert stopped.finish_reason == "stop"
    n = len(stopped.completion_ids)
    assert n < len(full.completion_ids) and stopped.completion_ids == full.completion_ids[:n]
    assert stop in qwen_tok.decode(stopped.completion_ids) and stop not in qwen_tok.decode(stopped.completion_ids[:-1])
    if stop not in engine.generate([SHORT], greedy())[0].text:
        assert other.finish_reason == "length" and len(other.completion_ids) == 12


def test_seeded_sampling_reproduces_and_leaves_global_rng_alone(qwen_model, qwen_tok):
    engine = TransformersEngine(qwen_model, qwen_tok)
    params = SamplingParams(n=4, max_new_tokens=8, temperature=1.0, top_p=0.95, seed=7)
    torch.manual_seed(123)
    first = engine.generate([SHORT], params)
    after_first = torch.rand(1)
    torch.manual_seed(123)
    second = engine.generate([SHORT], params)
    assert torch.rand(1) == after_first  # a seeded call does not consume the caller's RNG
    assert [c.completion_ids for c in first] == [c.completion_ids for c in second]
    assert len({tuple(c.completion_ids) for c in first}) > 1  # samples of a group differ
    other = engine.generate([SHORT], SamplingParams(n=4, max_new_tokens=8, temperature=1.0, seed=8))
    assert [c.completion_ids for c in other] != [c.completion_ids for c in first]


def test_mode_is_restored_after_generation(qwen_model, qwen_tok):
    engine = TransformersEngine(qwen_model, qwen_tok)
    qwen_model.train()
    engine.generate([SHORT], greedy(max_new_tokens=2))
    assert qwen_model.training and all(m.training for m in qwen_model.modules())
    qwen_model.eval()
    engine.generate([SHORT], greedy(max_new_tokens=2))
    assert not any(m.training for m in qwen_model.modules())


def test_peft_wrapped_model_generates_like_its_base(qwen_model, qwen_tok):
    from peft import LoraConfig, get_peft_model

    base = TransformersEngine(qwen_model, qwen_tok).generate([SHORT, LONG], greedy())
    peft_model = get_peft_model(copy.deepcopy(qwen_model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.train()
    wrapped = TransformersEngine(peft_model, qwen_tok).generate([SHORT, LONG], greedy())
    # A fresh LoRA adapter starts as the identity (B = 0), so answers must match the base.
    assert [c.completion_ids for c in wrapped] == [c.completion_ids for c in base]
    assert peft_model.training


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A Llama-style tokenizer: one token per character and bos put in front by default."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    vocab.update({ch: i + 3 for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz0123456789 +=.<>/")})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def test_bos_tokenizer_gets_bos_once_and_rows_end_at_their_own_eos():
    tok = char_tokenizer()
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    engine = TransformersEngine(LlamaForCausalLM(config), tok)
    assert engine.encode_prompt("ab") == [1, 3, 4]
    assert engine.encode_prompt("<s>ab") == [1, 3, 4]  # a template that wrote bos gets no second one
    # With 46 tokens, eos (id 2) comes up by chance: some samples stop, others hit the cap.
    outs = engine.generate(["1+1=", "ab"], SamplingParams(n=8, max_new_tokens=40, temperature=1.0, seed=0))
    assert {c.finish_reason for c in outs} == {"stop", "length"}
    for c in outs:
        assert c.prompt_ids[0] == 1 and c.prompt_ids.count(1) == 1
        if c.finish_reason == "stop":
            assert c.completion_ids[-1] == 2 and 2 not in c.completion_ids[:-1]
            assert c.text == tok.decode(c.completion_ids[:-1]) and "</s>" not in c.text
        else:
            assert len(c.completion_ids) == 40 and 2 not in c.completion_ids
