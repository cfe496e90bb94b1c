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

# Each term costs the keyword query one index scan (and one count): a bound keeps a long query cheap.
MAX_TERMS = 32
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


def parse(query: str, *, truncate: bool = False) -> SearchTerms:
    """Split `query` into terms; InvalidArgument beyond MAX_TERMS distinct ones (unless `truncate`)."""
    included: dict[str, str] = {}
    excluded: dict[str, str] = {}
    for token in _TOKEN.findall(query):
        target = included
        if token.startswith("-") and len(token) > 1:
            target, token = excluded, token[1:]
        if token.strip('"').strip():
            target.setdefault(token.casefold(), token)
    count = len(included) + len(excluded)
    if count > MAX_TERMS:
        if not truncate:
            raise InvalidArgument(
                f"the query has {count} distinct search terms; at most {MAX_TERMS} are allowed: use fewer words"
            )
        room = max(0, MAX_TERMS - len(excluded))
        return SearchTerms(tuple(list(included.values())[:room]), tuple(list(excluded.values())[:MAX_TERMS]))
    return SearchTerms(tuple(included.values()), tuple(excluded.values()))
