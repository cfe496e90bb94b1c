"""`mindscape doctor` against the shared test cluster: the configuration it prints and its checks."""

from __future__ import annotations

from mindscape.database import migrate
from mindscape.database.targets import Targets
from tests.support.cli import doctor, line_of


def test_healthy_database_passes_and_says_hashing_is_lexical(targets: Targets) -> None:
    result = doctor(targets, MINDSCAPE_EMBEDDING_PROVIDER="hashing")

    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.stdout
    assert line_of(result.stdout, "ok    database:").endswith("reachable at " + targets.runtime)
    assert line_of(result.stdout, "ok    schema:") == f"ok    schema: at head ({migrate.head_revision()})"
    assert line_of(result.stdout, "ok    pgvector:")
    assert line_of(result.stdout, "ok    postgresql:")
    assert "subject to row-level security" in line_of(result.stdout, "ok    role:")
    embeddings = line_of(result.stdout, "warn  embeddings:")
    assert "hashing:mindscape-hash-v1:384" in embeddings
    assert "lexical" in embeddings
    assert 'embedding_provider = "local"' in result.stdout
    assert "embedding_provider = hashing" in result.stdout  # the configuration section


def test_secrets_are_masked(targets: Targets) -> None:
    result = doctor(
        targets,
        MINDSCAPE_EMBEDDING_API_KEY="sk-very-secret",
        MINDSCAPE_OWNER_DATABASE_URL="postgresql://owner:hunter2@127.0.0.1:1/x",
    )

    assert "sk-very-secret" not in result.output
    assert "hunter2" not in result.output
    assert "embedding_api_key = ***" in result.stdout
    assert "owner_database_url = postgresql://owner:***@127.0.0.1:1/x" in result.stdout


def test_missing_hnsw_index_is_a_warning_with_a_fix(targets: Targets) -> None:
    result = doctor(targets, MINDSCAPE_EMBEDDING_PROVIDER="hashing", MINDSCAPE_EMBEDDING_DIMENSIONS="17")

    assert result.exit_code == 0, result.output
    assert "none for hashing:mindscape-hash-v1:17" in line_of(result.stdout, "warn  hnsw index:")
    assert "fix: run `mindscape db upgrade`" in result.stdout


def test_unreachable_database_fails_without_the_password(targets: Targets) -> None:
    result = doctor(targets, MINDSCAPE_DATABASE_URL="postgresql://mindscape_app:s3cret@127.0.0.1:1/x")

    assert result.exit_code == 1
    assert "s3cret" not in result.output
    assert "cannot connect to PostgreSQL at postgresql://mindscape_app:***@127.0.0.1:1/x" in result.stdout
    assert "fix: start PostgreSQL or fix database_url" in result.stdout


def test_superuser_as_runtime_role_fails_with_a_fix(targets: Targets) -> None:
    result = doctor(targets, MINDSCAPE_DATABASE_URL=targets.owner)

    assert result.exit_code == 1
    assert "bypasses row-level security" in line_of(result.stdout, "FAIL  role:")
    assert "fix: connect as mindscape_app" in result.stdout


def test_invalid_settings_fail_with_one_check(targets: Targets) -> None:
    result = doctor(targets, MINDSCAPE_POOL_MAX_SIZE="0")

    assert result.exit_code == 1
    assert "pool_max_size" in line_of(result.stdout, "FAIL  settings:")
