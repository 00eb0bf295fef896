"""Stable hashing of words and character n-grams for the hashed text encoders.

Python's ``hash()`` is salted per process, so training and the worker would put the same
word in different buckets; blake2b gives the same bucket on every machine and every run.
Two segmentations: :func:`words` (runs of Unicode word characters: a Chinese title is one
or a few long "words", the behaviour of models built before segmentation was configurable)
and :func:`script_tokens` (NFKC first, so full-width forms fold to ASCII; then every
character of a script written without spaces — Han, kana, Thai, Lao, Khmer, Myanmar — is a
token of its own, and the other scripts keep their words), so word n-grams over Chinese are
character n-grams and an LSTM reads it character by character.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterator

PAD_ID = 0
_WORD = re.compile(r"\w+")
# Scripts written without spaces between words: CJK ideographs (BMP, extension A,
# compatibility, supplementary planes), hiragana/katakana, Thai, Lao, Myanmar, Khmer.
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
)


def words(text: str) -> list[str]:
    """The word tokens of ``text`` (runs of Unicode letters, digits and underscores)."""
    return _WORD.findall(text)


def script_tokens(text: str) -> list[str]:
    """NFKC-folded word tokens, one per character in scripts written without spaces.

    ``"ｉＰｈｏｎｅ15手机壳😀"`` -> ``["iPhone15", "手", "机", "壳"]``: full-width forms
    fold to ASCII; emoji and punctuation separate tokens and are not tokens themselves.
    Combining marks stay with their letter (``\\w`` alone would cut Hindi and Thai words
    at every vowel sign).
    """
    tokens: list[str] = []
    word: list[str] = []
    for char in unicodedata.normalize("NFKC", text):
        if _UNSPACED.match(char):
            if word:
                tokens.append("".join(word))
                word = []
            if unicodedata.category(char)[0] == "M" and tokens and _UNSPACED.match(tokens[-1]):
                tokens[-1] += char  # a Thai or Khmer vowel sign joins its consonant
            else:
                tokens.append(char)
        elif char.isalnum() or char == "_" or (word and unicodedata.category(char)[0] == "M"):
            word.append(char)
        elif word:
            tokens.append("".join(word))
            word = []
    if word:
        tokens.append("".join(word))
    return tokens


SEGMENTATIONS: dict[str, Callable[[str], list[str]]] = {
    "script": script_tokens,
    "word_runs": words,
}


@functools.lru_cache(maxsize=1 << 16)
def bucket(token: str, buckets: int) -> int:
    """A stable id in ``1..buckets`` for ``token``; 0 (``PAD_ID``) stays free for padding.

    Cached: product titles share most of their words and n-grams, so the worker hashes
    each one once instead of for every event.
    """
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "little") % buckets


def char_ngrams(word: str, min_n: int, max_n: int) -> Iterator[str]:
    """fastText-style character n-grams of ``<word>`` (the markers tell prefixes apart)."""
    marked = f"<{word}>"
    for n in range(min_n, max_n + 1):
        for start in range(len(marked) - n + 1):
            yield marked[start : start + n]
