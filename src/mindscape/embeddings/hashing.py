"""A built-in, offline, lexical embedder: signed feature hashing of words and character n-grams.

Each text becomes three bags of features, taken from the NFKC-normalised, lowercased text split
into words (runs of letters and digits; everything else, punctuation included, separates words):

- word unigrams (weight 1.0): shared words;
- word bigrams (weight 0.5): shared phrases and some word order;
- character 3..5-grams of each word padded with a space on both sides (weight 0.7 for all
  three sizes together): shared stems and spellings ("optimise" ~ "optimize", typos).

Every feature is hashed with BLAKE2b, salted with the model name, to a bucket and a sign (+1/-1)
among `dimensions`; its count contributes 1 + ln(count) (sub-linear tf). Each bag is L2-normalised
before weighting, so the weights hold whatever the text's length. The sum is L2-normalised.

Caps on work (content can be 1 MiB): words and bigrams come from the first 100,000 characters,
character n-grams from the words in the first 8,192 characters. Text beyond does not count.

A text without any word (empty, whitespace, punctuation only) gets the fixed unit vector
e_0 = (1, 0, ..., 0) instead of a zero vector, which could not be normalised or compared.

The output depends only on the text, the model name and `dimensions`: the same in every process
and on every machine (BLAKE2b, not Python's randomised hash()), assuming the same Unicode version
for lowercasing and NFKC; another platform's libm may change ln() in the last bit, nothing more.
Changing anything in this algorithm changes stored vectors: give the result a new model name
instead of editing "mindscape-hash-v1".
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

import anyio.to_thread

from mindscape.config.models import HASHING_DEFAULT_MODEL
from mindscape.embeddings.base import ModelSpec

DEFAULT_MODEL = HASHING_DEFAULT_MODEL
DEFAULT_DIMENSIONS = 384

WORD_CHARS_CAP = 100_000
NGRAM_CHARS_CAP = 8_192
NGRAM_SIZES = (3, 4, 5)

WORD_WEIGHT = 1.0
BIGRAM_WEIGHT = 0.5
NGRAM_WEIGHT = 0.7

# Letters and digits; "_" separates, so identifiers like user_id match "user" and "id".
_WORD = re.compile(r"[^\W_]+")

# Above this many characters in one call, hash in a worker thread so the event loop stays responsive.
_THREAD_THRESHOLD_CHARS = 64 * 1024


class HashingEmbedder:
    """Lexical embeddings: texts that share words and spellings score high, synonyms do not."""

    def __init__(self, model: str = DEFAULT_MODEL, dimensions: int = DEFAULT_DIMENSIONS) -> None:
        if dimensions < 1:
            raise ValueError(f"dimensions must be positive, got {dimensions}")
        self._spec = ModelSpec("hashing", model, dimensions)
        # A fixed-length digest of the model name prefixes every feature: any name, independent hashes.
        self._salt = hashlib.blake2b(model.encode(), digest_size=16).digest()
        # Per tag, feature -> signed slot (bucket, or ~bucket for sign -1): hashing dominates the cost.
        self._slots: dict[str, dict[str, int]] = {"w": {}, "b": {}, "c": {}}

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def semantic(self) -> bool:
        return False

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if sum(min(len(t), WORD_CHARS_CAP) for t in texts) > _THREAD_THRESHOLD_CHARS:
            return await anyio.to_thread.run_sync(self.embed_sync, list(texts))
        return self.embed_sync(texts)

    async def aclose(self) -> None:
        for slots in self._slots.values():
            slots.clear()

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_one(text) for text in texts]

    def embed_one(self, text: str) -> list[float]:
        dimensions = self._spec.dimensions
        words = _words(text[:WORD_CHARS_CAP])
        if not words:
            return _unit(dimensions)
        total = [0.0] * dimensions
        self._add(total, "w", Counter(words), WORD_WEIGHT)
        self._add(total, "b", Counter([f"{a} {b}" for a, b in itertools.pairwise(words)]), BIGRAM_WEIGHT)
        self._add(total, "c", _ngram_counts(Counter(_words(text[:NGRAM_CHARS_CAP]))), NGRAM_WEIGHT)
        norm = math.hypot(*total)
        if norm == 0.0:  # every feature cancelled out: vanishingly unlikely, but never divide by zero
            return _unit(dimensions)
        return [x / norm for x in total]

    def _add(self, total: list[float], tag: str, counts: Counter[str], weight: float) -> None:
        """Add one bag of features, L2-normalised and scaled by `weight`, to `total`."""
        dimensions = self._spec.dimensions
        # The one-character tag keeps words, bigrams and n-grams apart ("the" the word, " th" the n-gram).
        prefix = self._salt + tag.encode()
        slots = self._slots[tag]
        blake2b = hashlib.blake2b
        bag: dict[int, float] = {}
        for feature, count in counts.items():
            slot = slots.get(feature)
            if slot is None:
                value = int.from_bytes(blake2b(prefix + feature.encode(), digest_size=8).digest(), "little")
                # The top bit picks the sign, the other 63 the bucket (the modulo bias is negligible).
                slot = (value & _LOW_63) % dimensions
                if value >> 63:
                    slot = ~slot
                if len(slots) >= _SLOT_CACHE_SIZE:
                    slots.clear()
                slots[feature] = slot
            tf = _TF[count] if count < _TF_SIZE else 1.0 + math.log(count)
            if slot >= 0:
                bag[slot] = bag.get(slot, 0.0) + tf
            else:
                bag[~slot] = bag.get(~slot, 0.0) - tf
        norm = math.hypot(*bag.values())
        if norm == 0.0:  # no features of this kind, or they cancelled out
            return
        scale = weight / norm
        for i, x in bag.items():
            total[i] += x * scale


# Per tag; a full cache is dropped and refilled (about 3.5 MB each at most, measured).
_SLOT_CACHE_SIZE = 1 << 15
_TF_SIZE = 256
_TF = [0.0] + [1.0 + math.log(count) for count in range(1, _TF_SIZE)]
_LOW_63 = (1 << 63) - 1


def _words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def _ngram_counts(word_counts: Counter[str]) -> Counter[str]:
    """Character n-grams of each distinct word, counted as often as the word occurs."""
    grams: list[str] = []
    for word, count in word_counts.items():
        padded = f" {word} "
        mine = [padded[i : i + n] for n in NGRAM_SIZES for i in range(len(padded) - n + 1)]
        grams.extend(mine if count == 1 else mine * count)
    return Counter(grams)


def _unit(dimensions: int) -> list[float]:
    vector = [0.0] * dimensions
    vector[0] = 1.0
    return vector
