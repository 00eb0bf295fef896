"""Titles as shops really send them: without the words that name the category, or none.

The fashion catalogue's titles nearly name the article type ("Puma Men Black T-shirt"), so
a model learns to read the title and to ignore the photo. Real sellers write "Puma Men
Black", leave the title empty, or write it in another language. :class:`CategoryWords`
removes every word that names a class of the taxonomy (any level), with its singular and
plural forms and common synonyms (tee, tshirt, sneakers, ...); brand, gender, colour and
everything else stay. Evaluation scores a bundle on titles made poor this way (the
``poor-titles`` variant) and training shows the model such titles (category-word
dropout), so the photo has to carry the category.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prodcat.contract.components import fingerprint_of

TITLE_FIELD = "title"
VERSION = "1"
# Words of class names that do not name a category: joiners, the merged rare class, gender
# and colour, which a poor title keeps ("Mens Grooming Kit" must not strip "Men", nor "Eye
# Cream" the colour cream, "Skin" the colour skin).
KEEP = frozenset(
    {"and", "or", "of", "for", "with", "the", "a", "set", "sets", "other"}
    | {"men", "mens", "women", "womens", "boys", "girls", "kids", "unisex"}
    | {"cream", "skin", "gold", "silver", "rose", "nude", "copper", "bronze", "steel"}
)
# Common names of fashion categories that the class names do not spell out.
_SYNONYM_TEXT = """
    tee tees tshirt tshirts sneaker sneakers trainers trainer shoe slipper slippers
    loafer loafers moccasin moccasins boot boots flipflop flipflops chappal chappals
    floaters slides clogs pant pants trouser chinos denim denims jean bermuda bermudas
    jogger joggers trackpant trackpants capri legging tight top tank hoodie hoodies
    pullover cardigan jacket blazer coat kurti kurta shirt dress gown frock skirt saree
    sari lehenga bra brief panty panties trunks vest camisole nightsuit nightsuits
    pyjama pyjamas pajama pajamas watch wristwatch chronograph sunglass shades
    spectacles goggles bag handbag backpack satchel sling tote clutch purse wallet belt
    cap beanie tie cufflink scarf stole muffler glove sock stocking earring ear stud
    studs necklace chain chains pendant bangle bangles bracelet ring rings perfume
    perfumes edt edp deo deos deodorant spray lipstick lip lips gloss nail nails kajal
    eyeliner liner mascara foundation primer blush lotion moisturiser moisturizer
    serum cleanser scrub umbrella bottle football basketball robe
"""
SYNONYMS = frozenset(_SYNONYM_TEXT.split())
_TOKEN_EDGES = re.compile(r"^[^\w]+|[^\w]+$")


def word_key(token: str) -> str:
    """A token as compared with category words: lower case, no edge punctuation, no
    hyphens or apostrophes inside (T-Shirt -> tshirt, Men's -> mens)."""
    core = _TOKEN_EDGES.sub("", token.casefold())
    return core.replace("-", "").replace("'", "").replace("\u2019", "")


def forms(word: str) -> set[str]:
    """A word with its singular and plural forms (shoes <-> shoe, accessories <->
    accessory, dresses <-> dress, watches <-> watch)."""
    found = {word, word + "s", word + "es"}
    if word.endswith("ies"):
        found.add(word[:-3] + "y")
    if word.endswith("y"):
        found.add(word[:-1] + "ies")
    if word.endswith("es"):
        found.add(word[:-2])
    if word.endswith("s") and len(word) > 3:
        found.add(word[:-1])
    return found


@dataclass(frozen=True)
class CategoryWords:
    """The words (as :func:`word_key` keys) that name a category of one taxonomy."""

    words: frozenset[str]

    @classmethod
    def from_classes(cls, classes: Mapping[str, Sequence[str]]) -> CategoryWords:
        """From the class names of every level (``LabelSpace.classes`` or a manifest's
        ``labels``), their forms, and :data:`SYNONYMS`."""
        names = (name for level in classes.values() for name in level)
        return cls(frozenset(_words_of(names)))

    def remove_from(self, title: str) -> str:
        """``title`` without its category words; the other tokens keep their spelling."""
        return " ".join(t for t in title.split() if word_key(t) not in self.words)

    def describe(self) -> dict[str, Any]:
        """What makes the transform what it is (a cache-key and metrics part)."""
        return {"version": VERSION, "words": fingerprint_of(sorted(self.words))}


def _words_of(names: Iterable[str]) -> set[str]:
    words: set[str] = set()
    for name in names:
        for token in name.split():
            key = word_key(token)
            if key and key not in KEEP:
                words |= forms(key)
    for synonym in SYNONYMS:
        words |= forms(synonym)
    return words - KEEP


def poor_title(product: Mapping[str, Any], words: CategoryWords) -> dict[str, Any]:
    """The product with the category words removed from its title (and nothing else)."""
    title = str(product.get(TITLE_FIELD) or "")
    return {**product, TITLE_FIELD: words.remove_from(title)}


def no_title(product: Mapping[str, Any]) -> dict[str, Any]:
    """The product as a shop that sends no title sends it."""
    return {k: v for k, v in product.items() if k != TITLE_FIELD}


def no_photo(product: Mapping[str, Any]) -> dict[str, Any]:
    """The product as a shop that sends no photo sends it."""
    return {k: v for k, v in product.items() if k not in ("image", "image_url")}
