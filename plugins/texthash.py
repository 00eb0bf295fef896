"""Stable hashing of words and character n-grams for the hashed text encoders.

Python's ``hash()`` is salted per process, so training and the worker would put the same
word in different buckets; blake2b gives the same bucket on every machine and every run.
Words are runs of Unicode word characters, so any script works: a Chinese title is one or
a few long "words" whose character n-grams carry the meaning.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator

PAD_ID = 0
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The word tokens of ``text`` (runs of Unicode letters, digits and underscores)."""
    return _WORD.findall(text)


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
