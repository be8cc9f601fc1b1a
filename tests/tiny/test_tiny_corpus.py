"""The pretraining corpus: a scratchpad-heavy skill phase first, then the base mix."""

from __future__ import annotations

import random
import re
from itertools import pairwise

from thinkrl.data.tasks import get_task
from thinkrl.tiny.build import pretraining_corpus
from thinkrl.tiny.config import TinyConfig
from thinkrl.tiny.corpus import CorpusMix, noisy_reasoning

chain = get_task("chain")
OPS = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__}


def think_share(texts: list[tuple[str, str]]) -> float:
    return sum(c.startswith("<think>") for _, c in texts) / len(texts)


def test_skill_phase_comes_first_then_the_base_mix():
    cfg = TinyConfig(steps=100, batch_size=20, skill_phase=0.6, skill_direct_share=0.15, direct_share=0.6)
    texts = pretraining_corpus(chain, cfg, CorpusMix(direct=cfg.direct_share, noisy_think=cfg.noisy_share))
    assert len(texts) == 100 * 20
    skill, base = texts[:60 * 20], texts[60 * 20:]
    assert abs(think_share(skill) - 0.85) < 0.04
    assert abs(think_share(base) - 0.4) < 0.04
    assert all(p.startswith("User: ") and p.endswith(". Assistant:") for p, _ in texts)


def test_clean_scratchpads_are_correct_and_noisy_ones_carry_their_slip():
    rng = random.Random(0)
    for ex in chain.generate(200, seed=5):
        text, answer = noisy_reasoning(chain.scratchpad(ex), rng)
        steps = [re.fullmatch(r"(\d+)([-+*])(\d+)=(\d+)", s) for s in text.split(" ")]
        assert all(steps)
        wrong = [s for s in steps if int(s.group(4)) != OPS[s.group(2)](int(s.group(1)), int(s.group(3)))]
        assert len(wrong) == 1 and answer == steps[-1].group(4)
        assert all(a.group(4) == b.group(1) for a, b in pairwise(steps))  # each step starts from the last
