"""The tiny tokenizer: char-level, exact round trips, tags as single surviving tokens."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from thinkrl.data.tasks import get_task
from thinkrl.tiny.corpus import CorpusMix, corpus_texts
from thinkrl.tiny.tokenizer import TAGS, build_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    build_tokenizer().save_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


def test_round_trips_task_and_corpus_texts_exactly(tok):
    texts = [p + c for p, c in corpus_texts(get_task("chain"), 300, seed=9, mix=CorpusMix())]
    texts += [ex.prompt + " " + get_task("countdown").scratchpad(ex) for ex in get_task("countdown").generate(50, 2)]
    texts += ["  two  spaces\nand a newline, then <think> a b </think>\n<answer> 4 </answer>  "]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_one_token_per_char_and_tags_are_single_normal_tokens(tok):
    assert tok("12+3", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(c) for c in "12+3"]
    for tag in TAGS:
        ids = tok(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] not in tok.all_special_ids
    assert len(tok("<think>7</think>", add_special_tokens=False)["input_ids"]) == 3


def test_special_tokens_and_unknown_chars(tok):
    assert {tok.pad_token, tok.eos_token, tok.bos_token} == {"<pad>", "</s>", "<s>"}
    assert len({tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}) == 3
    ids = tok("é", add_special_tokens=False)["input_ids"]
    assert ids == [tok.unk_token_id]
    assert tok.decode(tok("x</s>")["input_ids"], skip_special_tokens=True) == "x"


def test_chat_template_matches_the_pretraining_prompt(tok):
    text = tok.apply_chat_template([{"role": "user", "content": "((7+5)*3)-4"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<s>User: ((7+5)*3)-4. Assistant:"
    # No doubled bos when the rendered text is encoded again.
    assert tok(text, add_special_tokens=False)["input_ids"].count(tok.bos_token_id) == 1
