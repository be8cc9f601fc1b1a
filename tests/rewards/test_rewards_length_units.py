"""Length rewards count tokens: `max_len: 4096` means 4096 generated tokens, as in DAPO, not
4096 characters (about 1,000 tokens). The trainer hands each completion's token ids to the
rewards that ask for them; elsewhere a tokenizer counts, and characters only when asked."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from thinkrl.data.example import Example
from thinkrl.errors import ConfigError
from thinkrl.rewards import RewardResult, RewardTerm, get_reward, register, score_completions
from thinkrl.rewards.length import cosine_value, overlong_penalty
from thinkrl.rewards.routing import score_routed

PLAIN = Example(prompt="2+2?", answer="4", kind="math")
WORDY = "antidisestablishmentarianism " * 40  # 1,160 characters, a few tokens per word


@register("test_sees_tokens", isolate=False)
def sees_tokens(completion: str, example: Example, completion_tokens: int | None = None) -> RewardResult:
    return RewardResult(-1.0 if completion_tokens is None else float(completion_tokens), "seen")


@register("test_sees_ids_in_worker")
def sees_ids_in_worker(completion: str, example: Example, completion_ids: list[int] | None = None) -> RewardResult:
    return RewardResult(-1.0 if completion_ids is None else float(sum(completion_ids)), "seen")


@register("test_takes_only_options", isolate=False)
def takes_only_options(completion: str, example: Example, **options) -> RewardResult:
    return RewardResult(float(len(options)), ",".join(sorted(options)) or "none")


def test_overlong_penalises_by_token_count_not_characters() -> None:
    fn = get_reward("overlong")
    by_tokens = fn(WORDY, PLAIN, max_len=200, cache=100, completion_tokens=120)
    assert by_tokens.score == overlong_penalty(120, 200, 100) == -0.2
    assert by_tokens.reason == "near_limit"
    assert fn(WORDY, PLAIN, max_len=200, cache=100, completion_tokens=90).score == 0.0
    assert fn(WORDY, PLAIN, max_len=200, cache=100, unit="chars").score == -1.0  # 1,160 characters


def test_overlong_counts_with_a_tokenizer_where_no_count_is_given(qwen_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokens = len(AutoTokenizer.from_pretrained(qwen_tokenizer_dir)(WORDY, add_special_tokens=False)["input_ids"])
    assert 40 <= tokens < len(WORDY) // 4
    result = get_reward("overlong")(WORDY, PLAIN, max_len=tokens + 50, cache=100, tokenizer=str(qwen_tokenizer_dir))
    assert result.score == overlong_penalty(tokens, tokens + 50, 100) < 0
    # the sampler's own count wins over re-tokenising
    given = get_reward("overlong")(WORDY, PLAIN, max_len=200, cache=100, tokenizer=str(qwen_tokenizer_dir),
                                   completion_tokens=10)
    assert given.score == 0.0


def test_cosine_length_shapes_by_tokens() -> None:
    fn = get_reward("cosine_length")
    right = WORDY + "<answer>4</answer>"
    wrong = WORDY + "<answer>5</answer>"
    assert fn(right, PLAIN, max_len=1000, completion_tokens=300).score == pytest.approx(cosine_value(300, 1000, 1.0, 0.5))
    assert fn(wrong, PLAIN, max_len=1000, completion_tokens=300).score == pytest.approx(cosine_value(300, 1000, -0.5, 0.0))
    assert fn(right, PLAIN, max_len=1000, completion_tokens=1001).reason == "overlong"
    assert fn(right, PLAIN, max_len=1000, unit="chars").reason == "overlong"  # 1,178 characters


def test_no_count_and_no_tokenizer_is_an_error_not_characters(caplog) -> None:
    with pytest.raises(ConfigError, match="tokenizer"):
        get_reward("overlong")(WORDY, PLAIN, max_len=4096)
    with pytest.raises(ConfigError, match="unit"):
        get_reward("overlong")(WORDY, PLAIN, max_len=4096, unit="words")
    with pytest.raises(ConfigError, match="unit is chars"):
        get_reward("cosine_length")(WORDY, PLAIN, unit="chars", tokenizer="some/tokenizer")
    with caplog.at_level(logging.WARNING):
        scores = score_completions([WORDY], [PLAIN], [RewardTerm(name="overlong")], workers=0)
    assert scores.reasons["overlong"] == ["error"] and scores.errors == 1
    assert "set its option tokenizer" in caplog.text
    counted = Example(prompt="Q", answer="4", meta={"completion_tokens": 4000})  # a `thinkrl reward` row
    assert get_reward("overlong")(WORDY, counted, max_len=4096, cache=512).reason == "near_limit"


def test_counting_characters_says_so_once(caplog) -> None:
    from thinkrl.rewards.length import _say_chars_once

    _say_chars_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="thinkrl.rewards.length"):
        for _ in range(3):
            get_reward("overlong")(WORDY, PLAIN, max_len=4096, unit="chars", completion_tokens=5000)
    said = [r for r in caplog.records if "counts characters" in r.getMessage()]
    assert len(said) == 1 and "overlong" in said[0].getMessage()


@pytest.mark.parametrize("workers", [0, 1])
def test_score_completions_passes_token_facts_only_to_rewards_that_take_them(workers: int) -> None:
    terms = [RewardTerm(name="test_sees_tokens"), RewardTerm(name="test_sees_ids_in_worker"),
             RewardTerm(name="test_takes_only_options", options={"x": 1})]
    ids = [[1, 2, 3], None, []]
    scores = score_completions(["abc", "text from an endpoint", ""], [PLAIN] * 3, terms, workers=workers,
                               completion_ids=ids)
    assert scores.by_name["test_sees_tokens"] == [3.0, -1.0, 0.0]  # None: not known, not passed
    assert scores.by_name["test_sees_ids_in_worker"] == [6.0, -1.0, 0.0]
    assert scores.reasons["test_takes_only_options"] == ["x"] * 3  # **options never gets the facts
    assert scores.errors == 0
    plain = score_completions(["abc"], [PLAIN], terms[:1], workers=0)
    assert plain.by_name["test_sees_tokens"] == [-1.0]


def test_token_facts_are_not_spec_options() -> None:
    with pytest.raises(ConfigError, match="supplied by the scorer"):
        score_completions(["a"], [PLAIN], [RewardTerm(name="overlong", options={"completion_tokens": 3})], workers=0)
    with pytest.raises(ConfigError, match="its options: max_len, cache, unit, tokenizer$"):
        score_completions(["a"], [PLAIN], [RewardTerm(name="overlong", options={"tokens": 3})], workers=0)
    with pytest.raises(ValueError, match="token id lists"):
        score_completions(["a"], [PLAIN], [RewardTerm(name="overlong")], workers=0, completion_ids=[])


def test_routed_scoring_keeps_each_completions_ids() -> None:
    examples = [PLAIN, Example(prompt="hi", answer=None, kind="general"), PLAIN]
    spec = [RewardTerm(name="overlong", options={"max_len": 10, "cache": 10})]
    scores = score_routed(["a", "b", "c"], examples, spec, {"general": [RewardTerm(name="test_sees_tokens")]},
                          workers=0, completion_ids=[[1] * 5, [1] * 7, [1] * 2])
    assert scores.by_name["overlong"][0::2] == [-0.5, -0.2]
    assert scores.by_name["test_sees_tokens"][1] == 7.0


# --- in training: the trainer's token counts reach the reward ---------------------------

MAX_LEN = 64  # overlong with cache = max_len is linear: the penalty is -tokens / MAX_LEN


@pytest.fixture(scope="module")
def qwen_vocab_model(tmp_path_factory, qwen_tokenizer_dir: Path) -> Path:
    """A random 1-layer Llama over Qwen's byte-level BPE vocabulary, whose tokens are mostly
    several characters long, so a token count and a character count part ways."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("qwen-vocab-random")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _grpo_config(model_dir: Path, run_dir: Path):
    from thinkrl.config import load_config
    from thinkrl.train.config import GRPOConfig

    return load_config(GRPOConfig, None, [
        f"model.name={model_dir}", "data.path=task:chain", "data.task_size=16", "data.task_seed=3",
        "rollout.prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8",
        "optim.micro_batch_size=4", "optim.lr=0.001", "run.steps=1", "run.save_every=0", "run.plot=false",
        f"rewards=[{{name: overlong, options: {{max_len: {MAX_LEN}, cache: {MAX_LEN}}}}}]",
        f"run.output_dir={run_dir}",
    ])


def test_rollout_penalties_follow_the_generated_token_counts(qwen_vocab_model: Path, tmp_path: Path) -> None:
    from thinkrl.data.loaders import load_examples
    from thinkrl.data.templates import render_prompt
    from thinkrl.rollout.transformers_engine import TransformersEngine
    from thinkrl.train.grpo import collect_rollout
    from thinkrl.train.model_setup import load_policy
    from thinkrl.train.rollouts import PromptOrder

    cfg = _grpo_config(qwen_vocab_model, tmp_path)
    policy = load_policy(cfg.model, need_reference=False)
    examples = load_examples(cfg.data)
    prompts = [render_prompt(ex, cfg.data.template, policy.tokenizer) for ex in examples]
    engine = TransformersEngine(policy.model, policy.tokenizer)
    rollout = collect_rollout(engine, examples, prompts, PromptOrder(len(examples), 0), step=1, cfg=cfg)
    penalties = rollout.scores.by_name["overlong"]
    assert len(penalties) == len(rollout.completions) == 8
    for completion, penalty in zip(rollout.completions, penalties):
        assert completion.completion_ids
        assert penalty == overlong_penalty(len(completion.completion_ids), MAX_LEN, MAX_LEN)
    by_chars = [overlong_penalty(len(c.text), MAX_LEN, MAX_LEN) for c in rollout.completions]
    assert by_chars != penalties, "the test needs completions whose characters outnumber their tokens"


def test_a_grpo_run_logs_penalties_of_its_token_lengths(qwen_vocab_model: Path, tmp_path: Path) -> None:
    from thinkrl.train.grpo import train_grpo
    from thinkrl.train.tracking import read_metrics

    train_grpo(_grpo_config(qwen_vocab_model, tmp_path))
    [metrics] = read_metrics(tmp_path / "metrics.jsonl")
    assert metrics["reward_errors"] == 0
    assert metrics["reward/overlong"] == pytest.approx(-metrics["completion/length_mean"] / MAX_LEN)
    assert metrics["completion/length_max"] <= 8
