"""Settings precedence: flags > MINDSCAPE_* environment > TOML file > defaults; bad input is a StartupError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mindscape.config.settings import default_data_dir, load_settings
from mindscape.errors import StartupError


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (no ./mindscape.toml) and no MINDSCAPE_* variable from outside."""
    for key in [k for k in os.environ if k.startswith("MINDSCAPE_")]:
        monkeypatch.delenv(key)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return toml(
        tmp_path / "settings.toml",
        'tenant = "from-file"\nstatement_timeout_ms = 1111\nlog_level = "ERROR"\npool_max_size = 7\n',
    )


def test_defaults_without_file_environment_or_flags() -> None:
    settings = load_settings()

    assert settings.tenant is None
    assert settings.database_url is None
    assert settings.embedded
    assert settings.statement_timeout_ms == 5000
    assert settings.pool_max_size == 10
    assert settings.log_level == "WARNING"
    assert settings.data_dir == default_data_dir()


def test_config_file_overrides_defaults(config: Path) -> None:
    settings = load_settings(config)

    assert settings.tenant == "from-file"
    assert settings.statement_timeout_ms == 1111
    assert settings.log_level == "ERROR"
    assert settings.pool_max_size == 7
    assert settings.pool_min_size == 1  # not in the file: still the default


def test_environment_overrides_config_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINDSCAPE_TENANT", "from-env")
    monkeypatch.setenv("MINDSCAPE_STATEMENT_TIMEOUT_MS", "2222")

    settings = load_settings(config)

    assert settings.tenant == "from-env"
    assert settings.statement_timeout_ms == 2222
    assert settings.log_level == "ERROR"  # only in the file


def test_flags_override_environment_and_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINDSCAPE_TENANT", "from-env")

    settings = load_settings(config, tenant="from-flag")

    assert settings.tenant == "from-flag"
    assert settings.statement_timeout_ms == 1111


def test_a_flag_left_out_does_not_override(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI passes None for an option the user did not give.
    monkeypatch.setenv("MINDSCAPE_TENANT", "from-env")

    settings = load_settings(config, tenant=None, statement_timeout_ms=None)

    assert settings.tenant == "from-env"
    assert settings.statement_timeout_ms == 1111


def test_mindscape_config_names_the_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINDSCAPE_CONFIG", str(config))

    assert load_settings().tenant == "from-file"


def test_config_flag_wins_over_mindscape_config(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINDSCAPE_CONFIG", str(config))
    other = toml(tmp_path / "other.toml", 'tenant = "from-other-file"\n')

    assert load_settings(other).tenant == "from-other-file"


def test_mindscape_toml_in_the_working_directory_is_read_when_no_file_is_named(workdir: Path) -> None:
    toml(workdir / "mindscape.toml", 'tenant = "from-cwd"\n')

    assert load_settings().tenant == "from-cwd"


def test_a_named_config_file_wins_over_the_working_directorys(
    config: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml(workdir / "mindscape.toml", 'tenant = "from-cwd"\nlog_level = "DEBUG"\n')

    assert load_settings(config).tenant == "from-file"
    monkeypatch.setenv("MINDSCAPE_CONFIG", str(config))
    settings = load_settings()
    assert settings.tenant == "from-file"
    assert settings.log_level == "ERROR"  # the files are not merged


def test_environment_overrides_the_working_directorys_config(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml(workdir / "mindscape.toml", 'tenant = "from-cwd"\n')
    monkeypatch.setenv("MINDSCAPE_TENANT", "from-env")

    assert load_settings().tenant == "from-env"


def test_database_urls_are_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINDSCAPE_DATABASE_URL", "postgresql://mindscape_app:s3cret@db.example/app")

    settings = load_settings()

    assert not settings.embedded
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == "postgresql://mindscape_app:s3cret@db.example/app"
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings)


def test_missing_config_file_is_a_startup_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"

    with pytest.raises(StartupError, match="does not exist; fix --config or MINDSCAPE_CONFIG") as caught:
        load_settings(missing)

    assert str(missing) in str(caught.value)


def test_missing_file_named_by_mindscape_config_is_a_startup_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINDSCAPE_CONFIG", str(tmp_path / "nowhere.toml"))

    with pytest.raises(StartupError, match=r"nowhere\.toml does not exist"):
        load_settings()


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="does not exist"):
        load_settings(tmp_path)


def test_invalid_tenant_flag_is_a_one_line_startup_error() -> None:
    with pytest.raises(StartupError) as caught:
        load_settings(tenant="Not A Slug")

    message = str(caught.value)
    assert message == (
        "invalid settings: tenant: tenant must be a slug: lowercase letters, digits and '-', at most 64 characters"
    )


def test_invalid_tenant_from_environment_is_a_startup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINDSCAPE_TENANT", "under_score")

    with pytest.raises(StartupError, match="tenant must be a slug"):
        load_settings()


def test_invalid_tenant_in_config_file_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="tenant must be a slug"):
        load_settings(toml(tmp_path / "m.toml", 'tenant = "-dash-first"\n'))


def test_unknown_key_in_config_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(StartupError) as caught:
        load_settings(toml(tmp_path / "m.toml", 'tenant = "acme"\ncolour = "blue"\n'))

    assert str(caught.value) == "invalid settings: colour: unknown setting"


def test_every_invalid_value_is_listed_on_one_line(tmp_path: Path) -> None:
    with pytest.raises(StartupError) as caught:
        load_settings(toml(tmp_path / "m.toml", 'pool_max_size = 0\nlog_level = "LOUD"\n'))

    message = str(caught.value)
    assert "\n" not in message
    assert "pool_max_size: Input should be greater than or equal to 1" in message
    assert "log_level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'" in message


def test_invalid_value_in_environment_is_a_startup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINDSCAPE_STATEMENT_TIMEOUT_MS", "soon")

    with pytest.raises(StartupError, match="statement_timeout_ms: Input should be a valid integer"):
        load_settings()


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    broken = toml(tmp_path / "m.toml", 'tenant = "acme\n')

    with pytest.raises(StartupError) as caught:
        load_settings(broken)

    assert str(caught.value).startswith(f"config file {broken} is not valid TOML: ")
    assert "line 1" in str(caught.value)


def test_a_transaction_pooler_needs_a_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINDSCAPE_DATABASE_POOLER", "transaction")
    with pytest.raises(StartupError, match="database_pooler = transaction needs database_url"):
        load_settings()
    monkeypatch.setenv("MINDSCAPE_DATABASE_URL", "postgresql://mindscape_app@pgbouncer:6432/mindscape")
    assert load_settings().database_pooler == "transaction"
    monkeypatch.setenv("MINDSCAPE_DATABASE_POOLER", "session")
    with pytest.raises(StartupError, match="database_pooler"):
        load_settings()


def test_the_quota_backend_is_the_database_unless_a_single_process_asks_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().quota_backend == "database"
    monkeypatch.setenv("MINDSCAPE_QUOTA_BACKEND", "process")
    assert load_settings().quota_backend == "process"
    monkeypatch.setenv("MINDSCAPE_QUOTA_BACKEND", "redis")
    with pytest.raises(StartupError, match="quota_backend: Input should be 'database' or 'process'"):
        load_settings()


def test_the_database_time_budget_has_defaults_and_refuses_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert (settings.quota_db_ms_per_second, settings.quota_db_burst_ms) == (250, 250)
    monkeypatch.setenv("MINDSCAPE_QUOTA_DB_MS_PER_SECOND", "0")  # unlimited
    assert load_settings().quota_db_ms_per_second == 0
    monkeypatch.setenv("MINDSCAPE_QUOTA_DB_MS_PER_SECOND", "-5")
    with pytest.raises(StartupError, match="quota_db_ms_per_second: Input should be greater than or equal to 0"):
        load_settings()
    monkeypatch.setenv("MINDSCAPE_QUOTA_DB_MS_PER_SECOND", "200")
    monkeypatch.setenv("MINDSCAPE_QUOTA_DB_BURST_MS", "a second")
    with pytest.raises(StartupError, match="quota_db_burst_ms: Input should be a valid integer"):
        load_settings()


def test_the_read_database_url_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINDSCAPE_READ_DATABASE_URL", "postgresql://mindscape_app:s3cret@standby.example/app")
    settings = load_settings()
    assert settings.read_database_url is not None
    assert "s3cret" not in repr(settings)
