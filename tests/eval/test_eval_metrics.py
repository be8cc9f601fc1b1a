"""Behaviour metrics on hand-written responses."""

from __future__ import annotations

from thinkrl.eval.metrics import reflection_counts, uses_scratchpad


def test_reflection_words_whole_words_and_inflections():
    text = ("Wait, let me double-check. Hmm, I double check it; checking again, verified. "
            "Re-evaluate! Reconsidering the checkpoint... no mistakes. Awaiting nothing.")
    assert reflection_counts(text) == {
        "wait": 1, "double-check": 2, "hmm": 1, "check": 1, "verify": 1,
        "re-evaluate": 1, "reconsider": 1, "mistake": 1,
    }
    assert reflection_counts("The answer is 4.") == {}


def test_scratchpad_needs_content():
    assert uses_scratchpad("<think> 2+2=4 </think><answer>4</answer>")
    assert not uses_scratchpad("<think>  \n</think><answer>4</answer>")
    assert not uses_scratchpad("<think> never closed")
    assert not uses_scratchpad("<answer>4</answer>")
