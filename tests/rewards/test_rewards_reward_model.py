"""The `reward_model` reward on a random tiny LlamaForSequenceClassification saved to disk."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from thinkrl.data.example import Example
from thinkrl.errors import ConfigError, ModelNotFoundError
from thinkrl.rewards import RewardTerm, get_reward, score_completions
from thinkrl.rewards import reward_model as rm
from thinkrl.tiny.tokenizer import build_tokenizer

QUESTION = "Write a greeting."
ANSWERS = ["Hello there, friend!", "no.", "<think>be kind</think> Good morning to you all.", "x" * 40]


@pytest.fixture(scope="module")
def rm_path(tmp_path_factory) -> str:
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, initializer_range=0.5)
    folder = tmp_path_factory.mktemp("tiny-rm")
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_scores_are_deterministic_and_tell_texts_apart(rm_path):
    pairs = [(QUESTION, a) for a in ANSWERS]
    first = rm.score_batch(rm_path, pairs, scale="raw")
    rm._MODELS.clear()  # load again from disk: same weights, same scores
    assert rm.score_batch(rm_path, pairs, scale="raw") == first
    assert len({round(s, 6) for s in first}) == len(ANSWERS)


def test_a_batch_scores_like_single_pairs(rm_path):
    pairs = [(QUESTION, a) for a in ANSWERS]
    batched = rm.score_batch(rm_path, pairs, scale="raw", batch_size=4)
    alone = [rm.score_batch(rm_path, [p], scale="raw")[0] for p in pairs]
    assert batched == pytest.approx(alone, abs=1e-5)


def test_sigmoid_scale_and_the_reward_function(rm_path):
    raw = rm.score_batch(rm_path, [(QUESTION, a) for a in ANSWERS], scale="raw")
    squashed = rm.score_batch(rm_path, [(QUESTION, a) for a in ANSWERS])
    assert all(0.0 < s < 1.0 for s in squashed)
    assert squashed == pytest.approx([1 / (1 + math.exp(-r)) for r in raw])
    example = Example(prompt=QUESTION, answer=None, kind="general")
    reward = get_reward("reward_model")
    # By default the model reads the summary after </think>; scope="full" reads everything.
    summary = reward(ANSWERS[2], example, path=rm_path)
    assert summary.score == pytest.approx(rm.score_batch(rm_path, [(QUESTION, "Good morning to you all.")])[0])
    assert reward(ANSWERS[2], example, path=rm_path, scope="full").score == pytest.approx(squashed[2])
    assert summary.reason == "scored"


def test_the_chat_template_frames_question_and_answer(rm_path):
    _, tokenizer = rm.load_reward_model(rm_path)
    text, add_special = rm.reward_text(tokenizer, QUESTION, "Hi!")
    assert text == "<s>User: Write a greeting.. Assistant:Hi!</s>" and add_special is False


def test_long_texts_keep_their_end(rm_path):
    long_answer = "a" * 300 + " the end"
    cut = rm.score_batch(rm_path, [(QUESTION, long_answer)], scale="raw", max_length=20)[0]
    _, tokenizer = rm.load_reward_model(rm_path)
    text, _ = rm.reward_text(tokenizer, QUESTION, long_answer)
    tail = tokenizer(text, add_special_tokens=False)["input_ids"][-20:]
    model, _ = rm.load_reward_model(rm_path)
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([tail])).logits[0, 0].item()
    assert cut == pytest.approx(expected, abs=1e-5)


def test_through_score_completions(rm_path):
    examples = [Example(prompt=QUESTION, kind="general")] * 2
    scores = score_completions(ANSWERS[:2], examples, [RewardTerm(name="reward_model", options={"path": rm_path})],
                               workers=0)
    assert scores.by_name["reward_model"] == pytest.approx(rm.score_batch(rm_path, [(QUESTION, a) for a in ANSWERS[:2]]))
    assert scores.errors == 0


def test_bad_paths_and_checkpoints_are_one_line_errors(tmp_path, tiny_random_model):
    example = Example(prompt=QUESTION, kind="general")
    reward = get_reward("reward_model")
    with pytest.raises(ModelNotFoundError, match="not found") as err:
        reward("hi", example, path=str(tmp_path / "missing"))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="needs option 'path'"):
        reward("hi", example)
    with pytest.raises(ConfigError, match="not a sequence-classification checkpoint"):
        reward("hi", example, path=str(tiny_random_model))  # a causal LM would score with a random head
