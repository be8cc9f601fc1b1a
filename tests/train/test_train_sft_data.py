"""SFT data: the loss mask (prompt/response and chat, tiny and Qwen tokenizers), truncation,
malformed rows, packing (same loss as unpacked on a real model) and the step plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from thinkrl.errors import DataError
from thinkrl.train.sft import token_loss_sum
from thinkrl.train.sft_config import SFTDataConfig
from thinkrl.train.sft_data import (
    IGNORE,
    collate,
    load_sft_data,
    pack_examples,
    tokenize_messages,
    tokenize_pair,
)
from thinkrl.train.sft_plan import FILLER, deal_micro_batches, plan_steps

CHAT = [
    {"role": "system", "content": "Be brief"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello there"},
    {"role": "user", "content": "2+2"},
    {"role": "assistant", "content": "4"},
]


@pytest.fixture(scope="module")
def tiny_tok(tiny_random_model):
    return AutoTokenizer.from_pretrained(tiny_random_model)


@pytest.fixture(scope="module")
def qwen_tok(qwen_tokenizer_dir):
    return AutoTokenizer.from_pretrained(qwen_tokenizer_dir)


def trained_text(tokenizer, example) -> str:
    return tokenizer.decode([t for t in example.labels if t != IGNORE])


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("which", ["tiny", "qwen"])
def test_prompt_response_mask_covers_response_and_eos_only(which, tiny_tok, qwen_tok):
    tok = tiny_tok if which == "tiny" else qwen_tok
    prompt = "User: 12+7. Assistant:" if which == "tiny" else \
        tok.apply_chat_template([{"role": "user", "content": "12+7"}], tokenize=False, add_generation_prompt=True)
    response = "<think>12+7=19</think><answer>19</answer>"
    ex = tokenize_pair(prompt, response, tok, max_length=512)
    prompt_len = len(tok(prompt, add_special_tokens=False)["input_ids"]) + (which == "tiny")  # tiny adds bos
    assert all(label == IGNORE for label in ex.labels[:prompt_len])
    assert ex.labels[prompt_len:] == ex.input_ids[prompt_len:]
    assert ex.input_ids[-1] == tok.eos_token_id  # the model learns to stop
    assert trained_text(tok, ex) == response + tok.eos_token
    assert ex.loss_tokens == len(ex.input_ids) - prompt_len
    assert tok.decode(ex.input_ids[:prompt_len]).endswith("Assistant:" if which == "tiny" else "assistant\n")


@pytest.mark.parametrize("which", ["tiny", "qwen"])
def test_chat_mask_covers_assistant_turns_only(which, tiny_tok, qwen_tok):
    tok = tiny_tok if which == "tiny" else qwen_tok
    ex = tokenize_messages(CHAT, tok, max_length=512)
    assert tok.decode(ex.input_ids) == tok.apply_chat_template(CHAT, tokenize=False).rstrip("\n") + (
        "\n" if which == "qwen" else "")
    end = tok.eos_token  # tiny: </s>, Qwen chat: <|im_end|>: each turn's end marker is learnt
    assert trained_text(tok, ex) == f"hello there{end}4{end}"
    # Spans: two runs of labelled tokens, nothing from the system or user turns.
    runs, inside = 0, False
    for label in ex.labels:
        if label != IGNORE and not inside:
            runs += 1
        inside = label != IGNORE
    assert runs == 2


def test_load_counts_truncation_and_drops_rows_without_response_tokens(tiny_tok, tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [
        {"prompt": "User: a. Assistant:", "response": "short"},
        {"prompt": "User: b. Assistant:", "response": "x" * 100},  # cut inside the response
        {"prompt": "User: " + "c" * 80 + ". Assistant:", "response": "lost"},  # prompt fills max_length
    ])
    data = load_sft_data(SFTDataConfig(path=str(path), max_length=40), tiny_tok, seed=0)
    assert (data.report.rows, data.report.truncated, data.report.dropped) == (3, 1, 1)
    assert [len(ex.input_ids) for ex in data.train] == [26, 40]  # bos + 19 + 5 + eos; cut at 40
    assert data.train[1].truncated and data.train[1].input_ids[-1] != tiny_tok.eos_token_id
    assert "1 truncated" in data.report.summary()


def test_malformed_rows_name_file_and_line(tiny_tok, tmp_path):
    good = {"prompt": "p", "response": "r"}
    bad_json = write_jsonl(tmp_path / "bad.jsonl", [good, good, '{"prompt": "p", "response": '])
    with pytest.raises(DataError, match=rf"^{bad_json}:3: bad JSON") as err:
        load_sft_data(SFTDataConfig(path=str(bad_json)), tiny_tok, seed=0)
    assert "\n" not in str(err.value)
    missing = write_jsonl(tmp_path / "missing.jsonl", [good, {"question": "p", "response": "r"}])
    with pytest.raises(DataError, match=rf"^{missing}:2: row needs string fields 'prompt' and 'response'.*question"):
        load_sft_data(SFTDataConfig(path=str(missing)), tiny_tok, seed=0)
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "no answer"}]}])
    with pytest.raises(DataError, match=rf"^{chat}:1: 'messages' has no assistant turn"):
        load_sft_data(SFTDataConfig(path=str(chat)), tiny_tok, seed=0)


def test_field_names_template_and_chat_rows_from_one_file(tiny_tok, tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"q": "3+4", "a": "7"},
        {"messages": CHAT},
    ])
    cfg = SFTDataConfig(path=str(path), prompt_field="q", response_field="a", template="r1_zero_short")
    data = load_sft_data(cfg, tiny_tok, seed=0)
    assert tiny_tok.decode(data.train[0].input_ids) == "<s>User: 3+4. Assistant:7</s>"
    assert trained_text(tiny_tok, data.train[1]) == "hello there</s>4</s>"


def test_parquet_json_and_saved_dataset_sources_read_alike(tiny_tok, tmp_path):
    import datasets

    rows = [{"prompt": f"User: {i}. Assistant:", "response": f"<answer>{i}</answer>"} for i in range(4)]
    dataset = datasets.Dataset.from_list(rows)
    dataset.to_parquet(str(tmp_path / "rows.parquet"))
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(tmp_path / "saved"))
    expected = load_sft_data(SFTDataConfig(path=str(write_jsonl(tmp_path / "rows.jsonl", rows))), tiny_tok, seed=0)
    for source in ("rows.parquet", "rows.json", "saved"):
        data = load_sft_data(SFTDataConfig(path=str(tmp_path / source), limit=3), tiny_tok, seed=0)
        assert [ex.input_ids for ex in data.train] == [ex.input_ids for ex in expected.train[:3]], source


def test_extra_paths_are_read_after_path_and_limit_counts_them_all(tiny_tok, tmp_path):
    """R1 stage 3 mixes rejection-sampled traces with general data: several sources, one run."""
    first = write_jsonl(tmp_path / "traces.jsonl", [{"prompt": f"User: {i}.", "response": f"<answer>{i}</answer>"}
                                                      for i in range(3)])
    general = write_jsonl(tmp_path / "general.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                                      {"role": "assistant", "content": "hello"}]}])
    data = load_sft_data(SFTDataConfig(path=str(first), extra_paths=[str(general), "task:chain"], task_size=2),
                         tiny_tok, seed=0)
    texts = [tiny_tok.decode(ex.input_ids) for ex in data.train]
    assert len(texts) == 6 and "<answer>0</answer>" in texts[0] and "hello" in texts[3] and "<think>" in texts[4]
    limited = load_sft_data(SFTDataConfig(path=str(first), extra_paths=[str(general)], limit=4), tiny_tok, seed=0)
    assert len(limited.train) == 4


def test_task_source_gives_scratchpad_responses(tiny_tok):
    data = load_sft_data(SFTDataConfig(path="task:chain", task_size=5, eval_fraction=0.2), tiny_tok, seed=0)
    assert (len(data.train), len(data.eval)) == (4, 1)
    text = tiny_tok.decode(data.train[0].input_ids)
    assert text.startswith("<s>User: ") and ". Assistant:<think>" in text and text.endswith("</answer></s>")


def test_packing_fits_rows_and_uses_every_example_once():
    lengths = [5, 9, 3, 7, 2, 8, 4, 6]
    rows = pack_examples(lengths, max_length=12, seed=0)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 12 for row in rows)
    assert len(rows) < len(lengths)


def test_packed_loss_equals_unpacked_loss(tiny_random_model, tiny_tok):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_random_model).eval()
    examples = [tokenize_pair(f"User: {p}. Assistant:", r, tiny_tok, 512)
                for p, r in [("1+2", "<answer>3</answer>"), ("a long question here", "a long answer too"),
                             ("x", "y"), ("9*9", "<think>9*9=81</think><answer>81</answer>")]]
    pad = tiny_tok.pad_token_id
    with torch.no_grad():
        unpacked = token_loss_sum(model, collate([[ex] for ex in examples], pad, packed=False))
        packed_batch = collate([examples[:3], examples[3:]], pad, packed=True)
        packed = token_loss_sum(model, packed_batch)
        # The same rows read as one sequence (no position restarts) give a different loss:
        # the block mask is what keeps the examples apart.
        leaky = token_loss_sum(model, {"input_ids": packed_batch["input_ids"], "labels": packed_batch["labels"]})
    assert packed_batch["input_ids"].shape[0] == 2
    assert packed_batch["position_ids"][0].tolist()[:len(examples[0].input_ids) + 1] == \
        list(range(len(examples[0].input_ids))) + [0]
    assert torch.allclose(packed, unpacked, rtol=1e-5, atol=1e-5)
    assert abs(float(leaky) - float(unpacked)) > 1e-3


def test_step_plan_visits_every_row_each_epoch_and_deals_same_rows_to_any_process_count():
    plan = plan_steps(n_rows=10, batch_size=4, seed=3, epochs=2)
    assert plan.steps_per_epoch == 3 and len(plan.steps) == 6
    for epoch in range(2):
        assert sorted(r for step in plan.steps[3 * epoch:3 * epoch + 3] for r in step) == list(range(10))
    assert plan.steps[:3] != plan.steps[3:]  # reshuffled each epoch
    assert len(plan_steps(10, 4, 3, epochs=1, max_steps=5).steps) == 5  # max_steps runs into epoch 2
    one = deal_micro_batches(plan.steps, processes=1, micro_batch_size=2, batch_size=4)
    two = deal_micro_batches(plan.steps, processes=2, micro_batch_size=2, batch_size=4)
    assert len(one) == len(two) == 12  # 6 steps x 2 micro-batches, both ways
    for s in range(6):
        rows_1 = sorted(r for b in one[2 * s:2 * s + 2] for r in b if r != FILLER)
        rows_2 = sorted(r for b in two[2 * s:2 * s + 2] for r in b if r != FILLER)
        assert rows_1 == rows_2 == sorted(plan.steps[s])
    assert two[4:6] == [plan.steps[2][0:2], [FILLER]]  # a short last step pads process 1 with a filler
