"""Memory context words: a full-text vector of each memory's `metadata.context`, for keyword recall.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

`metadata.context` is the text a memory follows (the previous turn of a conversation, the question
it answers), set explicitly by whoever stores it (memory/context.py). Its vector was already mixed
into the memory's embedding; keyword recall now counts a query word found only in the context at
half the weight of one in the content (memory/recall.py). The answer "Yes, every Sunday" is then
found by the words of the question it answers. Measured on LoCoMo (docs/memory-ranking.md).

A stored generated column like `search`, with its own GIN index: keyword recall must find memories
whose context alone has a query word (an index), and scores every candidate with it (no per-row
to_tsvector at query time). A context that is not a JSON string is not context (as in
memory/context.py `context_of`). Adding a stored column rewrites the table once.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONTEXT_TEXT = "CASE WHEN jsonb_typeof(metadata -> 'context') = 'string' THEN metadata ->> 'context' ELSE '' END"


def upgrade() -> None:
    op.execute("SET LOCAL ROLE mindscape_owner")
    # As for `search`: to_tsvector refuses texts whose lexemes pass 1 MB; the first 256 KiB carry the words.
    op.execute(
        "ALTER TABLE mindscape.memories ADD COLUMN context_search tsvector NOT NULL"
        f" GENERATED ALWAYS AS (to_tsvector('english'::regconfig, left({CONTEXT_TEXT}, 262144))) STORED"
    )
    op.execute("CREATE INDEX memories_context_search_gin ON mindscape.memories USING gin (context_search)")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute("SET LOCAL ROLE mindscape_owner")
    op.execute("ALTER TABLE mindscape.memories DROP COLUMN context_search")  # drops its index too
    op.execute("RESET ROLE")
