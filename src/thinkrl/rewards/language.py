"""Language consistency (R1 stage 2): the share of the chain of thought written in the target
language, so the model stops switching languages mid-thought.

Words are judged first by Unicode script (Han, Cyrillic, Arabic, ... versus Latin); among
Latin-script words, a language identifier that ships its model in its wheel (py3langid)
tells English from French, German, ... sentence by sentence. Math and code do not count as
any language: LaTeX, `$...$`, code spans, numbers and single letters (variables) are dropped.

It runs inline (no worker, no timeout), so its cost must be bounded by construction: every
scan is linear in the text's length (`strip_math_or_code` is a hand scan, the regexes are
single character classes), and only the first `MAX_SCORED_CHARS` of the chain of thought
are scored, far more than any rollout's token limit lets a model write.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from thinkrl.data.example import Example
from thinkrl.rewards.base import RewardResult, register
from thinkrl.rewards.formats import prefills_think

# Target language -> the scripts its words are written in.
SCRIPTS = {"zh": {"CJK"}, "ja": {"CJK", "HIRAGANA", "KATAKANA"}, "ko": {"HANGUL", "CJK"}, "ru": {"CYRILLIC"},
           "uk": {"CYRILLIC"}, "ar": {"ARABIC"}, "he": {"HEBREW"}, "el": {"GREEK"}, "hi": {"DEVANAGARI"}, "th": {"THAI"}}
# Latin-script languages the identifier chooses between (a closed set keeps short sentences stable).
LATIN_LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "no", "pl", "cs", "tr", "id", "vi", "ro", "fi", "hu")
# Math and code spans as (opener, closer), tried in this order at each position; a LaTeX
# command (`\frac`) is dropped too. The regex alternation this replaced rescanned to the end of
# the text for every unclosed `\(` or `\[`: 10 s on 64 KB of them.
_SPANS = (("```", "```"), ("`", "`"), ("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_SPAN_START = re.compile(r"[`$\\]")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[^\W\d_]+")
_SENTENCE = re.compile(r"[^.!?;:\n。！？]+")
_CJK_NAMES = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL")
MIN_WORDS_TO_IDENTIFY = 4  # shorter Latin sentences are too short to identify: they count as the target
MIN_CONFIDENCE = 0.9
MAX_SCORED_CHARS = 131_072  # about 32k tokens of prose: the rest of a longer chain of thought is not scored


def script_of(word: str) -> str:
    """The Unicode script of a word's first letter: LATIN, CJK, CYRILLIC, ARABIC, ..."""
    name = unicodedata.name(word[0], "UNKNOWN")
    for cjk in _CJK_NAMES:
        if name.startswith(cjk):
            return cjk
    return name.split(" ")[0]


class _NextCloser:
    """`text.find(closer, start)` for starts that only grow, each answer reused until the scan
    passes it: the searches for one closer cover disjoint stretches, O(len(text)) in all."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.known: dict[str, tuple[int, int]] = {}  # closer -> (searched from, found at or -1)

    def __call__(self, closer: str, start: int) -> int:
        known = self.known.get(closer)
        if known is not None and known[0] <= start and (known[1] < 0 or known[1] >= start):
            return known[1]
        found = self.text.find(closer, start)
        self.known[closer] = (start, found)
        return found


def _span_end(text: str, at: int, next_closer: _NextCloser) -> int | None:
    """End of the math or code span (or LaTeX command) starting at `at`, else None."""
    for opener, closer in _SPANS:
        if text.startswith(opener, at):
            close = next_closer(closer, at + len(opener))
            if close >= 0:
                return close + len(closer)
    command = _COMMAND.match(text, at)
    return command.end() if command else None


def strip_math_or_code(text: str) -> str:
    """`text` with each code span, `$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]` and LaTeX
    command replaced by a space (the shortest span from the leftmost opener, as a lazy regex
    would), in one linear pass: a flood of unclosed openers costs no more than prose."""
    pieces: list[str] = []
    next_closer = _NextCloser(text)
    kept = 0
    candidate = _SPAN_START.search(text)
    while candidate is not None:
        at = candidate.start()
        end = _span_end(text, at, next_closer)
        if end is None:
            candidate = _SPAN_START.search(text, at + 1)
            continue
        pieces.extend((text[kept:at], " "))
        kept = end
        candidate = _SPAN_START.search(text, end)
    pieces.append(text[kept:])
    return "".join(pieces)


def _units(text: str) -> list[tuple[str, str]]:
    """(script, word) pairs of the prose in `text`; each CJK character is one word."""
    units = []
    for match in _WORD.finditer(strip_math_or_code(text)):
        word = match.group(0)
        script = script_of(word)
        if script in _CJK_NAMES:
            units.extend((script_of(ch), ch) for ch in word)
        elif len(word) > 1:  # single letters are variables
            units.append((script, word))
    return units


@functools.lru_cache(maxsize=1)
def _identifier():
    """py3langid's identifier restricted to the Latin-script languages, or None if not installed."""
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        return None
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(LATIN_LANGUAGES))
    return identifier


def _latin_in_target(sentence_words: list[str], target: str) -> bool:
    if len(sentence_words) < MIN_WORDS_TO_IDENTIFY:
        return True
    identifier = _identifier()
    if identifier is None:
        return True
    language, confidence = identifier.classify(" ".join(sentence_words))
    return language == target or confidence < MIN_CONFIDENCE


def chain_of_thought(completion: str, example: Example, prefilled_think: bool | None = None) -> str:
    """The text inside the think block (all of it when the block never closes or is absent)."""
    text = completion
    if not prefills_think(example, prefilled_think):
        start = text.find("<think>")
        text = text[start + len("<think>"):] if start >= 0 else text
    end = text.find("</think>")
    return text[:end] if end >= 0 else text


def target_share(text: str, language: str = "en") -> tuple[int, int]:
    """(words in the target language, words counted) over the prose of `text`."""
    latin_target = language not in SCRIPTS
    target_scripts = {"LATIN"} if latin_target else SCRIPTS[language]
    good = total = 0
    for sentence in _SENTENCE.findall(text):
        units = _units(sentence)
        latin = [word for script, word in units if script == "LATIN"]
        latin_ok = latin_target and bool(latin) and _latin_in_target(latin, language)
        for script, _ in units:
            total += 1
            if script == "LATIN":
                good += latin_ok
            elif script in target_scripts:
                good += 1
    return good, total


@register("language_consistency", isolate=False)
def language_consistency(completion: str, example: Example, language: str = "en",
                         prefilled_think: bool | None = None) -> RewardResult:
    """Share of the chain-of-thought words in `language` (1.0 when it has no prose at all),
    over its first MAX_SCORED_CHARS characters."""
    thought = chain_of_thought(completion, example, prefilled_think)[:MAX_SCORED_CHARS]
    good, total = target_share(thought, language)
    if total == 0:
        return RewardResult(1.0, "no_words")
    share = good / total
    return RewardResult(share, "consistent" if good == total else ("other_language" if good == 0 else "mixed"))
