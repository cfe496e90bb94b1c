"""Semantic memory: memories and their embeddings, one row per (memory, model).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

Embeddings of different models and dimensions share one table; each row records its model key
(`provider:model:dimensions`) and a CHECK ties the vector's length to it. Vector indexes are
partial per model and created on demand (mindscape.database.vector_index), because the models
in use are configuration, not schema.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT = "(SELECT mindscape.app_tenant_id())"
KINDS = "('fact', 'event', 'preference', 'instruction', 'note')"

STATEMENTS = [
    "CREATE INDEX memories_search_gin ON mindscape.memories USING gin (search)",
    "CREATE INDEX memories_metadata_gin ON mindscape.memories USING gin (metadata jsonb_path_ops)",
    "CREATE INDEX memories_tenant_created ON mindscape.memories (tenant_id, created_at DESC)",
    "CREATE INDEX memories_tenant_persona ON mindscape.memories (tenant_id, persona_id)",
    "ALTER TABLE mindscape.memories ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE mindscape.memories FORCE ROW LEVEL SECURITY",
    f"CREATE POLICY memories_tenant ON mindscape.memories TO mindscape_tenant"
    f" USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})",
    "ALTER TABLE mindscape.memory_embeddings ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE mindscape.memory_embeddings FORCE ROW LEVEL SECURITY",
    f"CREATE POLICY memory_embeddings_tenant ON mindscape.memory_embeddings TO mindscape_tenant"
    f" USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON mindscape.memories TO mindscape_tenant",
    "GRANT SELECT, INSERT, DELETE ON mindscape.memory_embeddings TO mindscape_tenant",
]


def upgrade() -> None:
    op.execute("SET LOCAL ROLE mindscape_owner")
    op.create_table(
        "memories",
        sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("id", pg.UUID(as_uuid=True), nullable=False, server_default=sa.text("gen_random_uuid()")),
        sa.Column("persona_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False, server_default="note"),
        sa.Column("content", sa.Text(), nullable=False),
        # Computed by the writer (sha256 of the UTF-8 content): convert_to() is not immutable.
        sa.Column("content_sha256", pg.BYTEA(), nullable=False),
        sa.Column("metadata", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("importance", sa.Float(precision=24), nullable=True),  # real
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column(
            "search",
            pg.TSVECTOR(),
            # to_tsvector refuses texts whose lexemes pass 1 MB; the first 256 KiB carry the words.
            sa.Computed("to_tsvector('english'::regconfig, left(content, 262144))", persisted=True),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="memories_pkey"),
        sa.ForeignKeyConstraint(["tenant_id"], ["mindscape.tenants.id"], name="memories_tenant_fkey"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "persona_id"],
            ["mindscape.personas.tenant_id", "mindscape.personas.id"],
            name="memories_persona_fkey",
        ),
        sa.CheckConstraint(f"kind IN {KINDS}", name="memories_kind"),
        sa.CheckConstraint("length(content) BETWEEN 1 AND 1048576", name="memories_content_length"),
        sa.CheckConstraint("length(content_sha256) = 32", name="memories_content_sha256"),
        sa.CheckConstraint("jsonb_typeof(metadata) = 'object'", name="memories_metadata_object"),
        sa.CheckConstraint("importance IS NULL OR importance BETWEEN 0 AND 1", name="memories_importance"),
        schema="mindscape",
    )
    # Dedup: the same content for the same persona (or for no persona) is one memory.
    op.execute(
        "ALTER TABLE mindscape.memories ADD CONSTRAINT memories_dedup"
        " UNIQUE NULLS NOT DISTINCT (tenant_id, persona_id, content_sha256)"
    )
    op.execute("""
        CREATE TABLE mindscape.memory_embeddings (
            tenant_id uuid NOT NULL,
            model text NOT NULL,
            memory_id uuid NOT NULL,
            embedding vector NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT memory_embeddings_pkey PRIMARY KEY (tenant_id, model, memory_id),
            CONSTRAINT memory_embeddings_memory_fkey FOREIGN KEY (tenant_id, memory_id)
                REFERENCES mindscape.memories (tenant_id, id) ON DELETE CASCADE,
            CONSTRAINT memory_embeddings_model_key
                CHECK (model ~ '^(hashing|openai):[A-Za-z0-9._/:@-]{1,100}:[0-9]{1,4}$'),
            CONSTRAINT memory_embeddings_dims CHECK (vector_dims(embedding) = split_part(model, ':', -1)::int)
        )
    """)
    op.execute("CREATE INDEX memory_embeddings_memory ON mindscape.memory_embeddings (tenant_id, memory_id)")
    for statement in STATEMENTS:
        op.execute(statement)
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute("SET LOCAL ROLE mindscape_owner")
    op.execute("DROP TABLE mindscape.memory_embeddings")
    op.execute("DROP TABLE mindscape.memories")
    op.execute("RESET ROLE")
