"""Local embeddings: `local:` model keys, and tenants on the old default model stay on it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

The default provider becomes `local` (a sentence model in the server process). A tenant without
its own `embedding_model` setting follows the configured default, so every tenant embedded with
the old default, hashing, would find none of its vectors under the new one. Such tenants (whose
embeddings are mostly `hashing:` ones) are pinned to that model, exactly what `mindscape memory
reembed` records after a switch: their recall works as before, `mindscape doctor` lists them, and
`memory reembed` moves them. Tenants of a configured openai model follow the configuration as before.

memory_embeddings forces row-level security even on its owner; reading across tenants needs it
lifted, inside this transaction only (ALTER TABLE holds an exclusive lock until commit).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "[A-Za-z0-9._/:@-]{1,100}:[0-9]{1,4}$"

PIN_HASHING_TENANTS = """
UPDATE mindscape.tenants t
SET settings = jsonb_set(t.settings, '{embedding_model}', to_jsonb(m.model)), updated_at = now()
FROM (
    SELECT DISTINCT ON (tenant_id) tenant_id, model
    FROM (SELECT tenant_id, model, count(*) AS n FROM mindscape.memory_embeddings GROUP BY tenant_id, model) c
    ORDER BY tenant_id, n DESC, model
) m
WHERE t.id = m.tenant_id AND m.model LIKE 'hashing:%' AND NOT t.settings ? 'embedding_model'
"""


def _constraint(providers: str) -> None:
    op.execute("ALTER TABLE mindscape.memory_embeddings DROP CONSTRAINT memory_embeddings_model_key")
    op.execute(
        "ALTER TABLE mindscape.memory_embeddings ADD CONSTRAINT memory_embeddings_model_key"
        f" CHECK (model ~ '^({providers}):{KEY}')"
    )


def upgrade() -> None:
    op.execute("SET LOCAL ROLE mindscape_owner")
    _constraint("local|hashing|openai")
    op.execute("ALTER TABLE mindscape.memory_embeddings NO FORCE ROW LEVEL SECURITY")
    op.execute(PIN_HASHING_TENANTS)
    op.execute("ALTER TABLE mindscape.memory_embeddings FORCE ROW LEVEL SECURITY")
    op.execute("RESET ROLE")


def downgrade() -> None:
    # The older code knows no `local:` keys: their vectors go, and tenants on them follow the default again.
    op.execute("SET LOCAL ROLE mindscape_owner")
    op.execute("ALTER TABLE mindscape.memory_embeddings NO FORCE ROW LEVEL SECURITY")
    op.execute("DELETE FROM mindscape.memory_embeddings WHERE model LIKE 'local:%'")
    op.execute("ALTER TABLE mindscape.memory_embeddings FORCE ROW LEVEL SECURITY")
    op.execute(
        "UPDATE mindscape.tenants SET settings = settings - 'embedding_model', updated_at = now()"
        " WHERE settings ->> 'embedding_model' LIKE 'local:%'"
    )
    _constraint("hashing|openai")
    op.execute("RESET ROLE")
