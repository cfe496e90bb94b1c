"""Full-text queries: a search string split into the terms the SQL matches one by one.

The syntax is PostgreSQL's websearch syntax: words, "quoted phrases", and `-word` or
`-"a phrase"` to exclude. Unlike `websearch_to_tsquery` on the whole string, which needs every
word (AND), each term is matched on its own, so a text sharing any word matches and the ones
sharing more (or rarer) words rank first. Every term goes to SQL as a parameter and becomes a
tsquery there through `websearch_to_tsquery`, which accepts any text: nothing typed by a user is
ever formatted into SQL or parsed as tsquery syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mindscape.errors import InvalidArgument

# Each term costs the keyword query a pass over the rows holding any term (its frequency, its
# share of each row's coverage): ~15-20 ms per common word at 10,000 memories, a few ms per rare
# one (benchmarks/query_bounds.py; a quoted phrase or a hyphenated run of words is one term). 16
# keeps the worst recall near a third of a second there, and admits every LoCoMo question (at
# most 11 content words). Stop words cost nothing (PostgreSQL drops them) and do not count.
MAX_TERMS = 16
# PostgreSQL's `english` text search stop words (tsearch_data/english.stop): terms made only of one
# of these become empty tsqueries, which the SQL skips before any scan.
_STOP_WORDS_TEXT = """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
    herself it its itself they them their theirs themselves what which who whom this that these those am is are
    was were be been being have has had having do does did doing a an the and but if or because as until while
    of at by for with about against between into through during before after above below to from up down in out
    on off over under again further then once here there when where why how all any both each few more most
    other some such no nor not only own same so than too very s t can will just don should now
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
_NON_WORD = re.compile(r"[\W_]+")
# A quoted phrase (the closing quote may be missing, as websearch allows) or a run of non-blanks.
_TOKEN = re.compile(r'-?"[^"]*"?|\S+')


@dataclass(frozen=True)
class SearchTerms:
    included: tuple[str, ...]  # words and "quoted phrases" (quotes kept: websearch makes them phrases)
    excluded: tuple[str, ...]  # what followed a `-`

    @property
    def text(self) -> str:
        """The query without its exclusions and quotes: what a semantic search should embed."""
        return " ".join(term.strip('"') for term in self.included).strip()


def is_stop_word(term: str) -> bool:
    """A term PostgreSQL drops (an unquoted stop word, punctuation aside): it costs the query nothing."""
    return not term.startswith('"') and _NON_WORD.sub("", term.casefold()) in STOP_WORDS


def parse(query: str, *, truncate: bool = False) -> SearchTerms:
    """Split `query` into terms; InvalidArgument beyond MAX_TERMS distinct ones that are not stop words.

    With `truncate`, the terms past the bound are dropped instead (exclusions are kept first).
    """
    included: dict[str, str] = {}
    excluded: dict[str, str] = {}
    for token in _TOKEN.findall(query):
        target = included
        if token.startswith("-") and len(token) > 1:
            target, token = excluded, token[1:]
        if token.strip('"').strip():
            target.setdefault(token.casefold(), token)
    counted = [t for t in (*included.values(), *excluded.values()) if not is_stop_word(t)]
    if len(counted) <= MAX_TERMS:
        return SearchTerms(tuple(included.values()), tuple(excluded.values()))
    if not truncate:
        raise InvalidArgument(
            f"the query has {len(counted)} distinct search terms (not counting stop words like 'the'); at most "
            f'{MAX_TERMS} are allowed: keep the {MAX_TERMS} most telling words, or quote a phrase ("..." counts '
            "as one term)"
        )
    return SearchTerms(
        _within(list(included.values()), MAX_TERMS - min(MAX_TERMS, _cost(excluded))),
        _within(list(excluded.values()), MAX_TERMS),
    )


def _cost(terms: dict[str, str]) -> int:
    return sum(not is_stop_word(t) for t in terms.values())


def _within(terms: list[str], room: int) -> tuple[str, ...]:
    """The first terms that fit in `room` counted terms (stop words ride along free)."""
    kept: list[str] = []
    for term in terms:
        if not is_stop_word(term):
            if room == 0:
                continue
            room -= 1
        kept.append(term)
    return tuple(kept)
