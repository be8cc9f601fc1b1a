"""Language consistency (R1 stage 2): the share of the chain of thought written in the target
language, so the model stops switching languages mid-thought.

Words are judged first by Unicode script (Han, Cyrillic, Arabic, ... versus Latin); among
Latin-script words, a language identifier that ships its model in its wheel (py3langid)
tells English from French, German, ... sentence by sentence. Math and code do not count as
any language: LaTeX, `$...$`, code spans, numbers and single letters (variables) are dropped.
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
_MATH_OR_CODE = re.compile(r"```.*?```|`[^`]*`|\$\$.*?\$\$|\$[^$]*\$|\\\(.*?\\\)|\\\[.*?\\\]|\\[A-Za-z]+", re.DOTALL)
_WORD = re.compile(r"[^\W\d_]+")
_SENTENCE = re.compile(r"[^.!?;:\n。！？]+")
_CJK_NAMES = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL")
MIN_WORDS_TO_IDENTIFY = 4  # shorter Latin sentences are too short to identify: they count as the target
MIN_CONFIDENCE = 0.9


def script_of(word: str) -> str:
    """The Unicode script of a word's first letter: LATIN, CJK, CYRILLIC, ARABIC, ..."""
    name = unicodedata.name(word[0], "UNKNOWN")
    for cjk in _CJK_NAMES:
        if name.startswith(cjk):
            return cjk
    return name.split(" ")[0]


def _units(text: str) -> list[tuple[str, str]]:
    """(script, word) pairs of the prose in `text`; each CJK character is one word."""
    units = []
    for match in _WORD.finditer(_MATH_OR_CODE.sub(" ", text)):
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
    """Share of the chain-of-thought words in `language` (1.0 when it has no prose at all)."""
    good, total = target_share(chain_of_thought(completion, example, prefilled_think), language)
    if total == 0:
        return RewardResult(1.0, "no_words")
    share = good / total
    return RewardResult(share, "consistent" if good == total else ("other_language" if good == 0 else "mixed"))
