"""Persona files: every problem listed with its line, and a rejected file writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import asyncpg
import pytest
from typer.testing import CliRunner, Result

from mindscape.cli import app
from mindscape.config.settings import Settings
from mindscape.database.targets import Targets
from mindscape.errors import ImportFileError
from mindscape.models.persona import PersonaIn
from mindscape.ops import personas as persona_ops
from mindscape.ops.persona_files import read_persona_file
from tests.support.tenants import TenantFactory, persona

pytestmark = pytest.mark.anyio

SETTINGS = Settings(database_url=None)
SEED = [persona("ada", "Ada Analyst", summary="Seeded"), persona("basil", "Basil Support")]


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ImportFileError) as caught:
        read_persona_file(path)
    assert "nothing was written" in str(caught.value)
    return caught.value.problems


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def assert_problems(problems: list[str], expected: list[tuple[str, str]]) -> None:
    """Exactly these problems, in order: each a `line N: ...` prefix and a fragment of the message."""
    assert len(problems) == len(expected), problems
    for problem, (prefix, fragment) in zip(problems, expected, strict=True):
        assert problem.startswith(prefix), (problem, prefix)
        assert fragment in problem, (problem, fragment)


# --- reading files -----------------------------------------------------------------------


def test_every_problem_is_listed_with_its_line(tmp_path: Path) -> None:
    tags = ", ".join(f"t{i}" for i in range(33))
    file = write(
        tmp_path / "personas.yaml",
        f"""personas:
  - slug: good-one
    name: Good One
  - slug: Bad Slug
    name: Bad
  - slug: no-name
    summary: nameless
  - slug: extra
    name: Extra
    colour: blue
  - slug: many-tags
    name: Many
    tags: [{tags}]
  - slug: comma-tag
    name: Comma
    tags:
      - fine
      - "has,comma"
  - just a string
""",
    )

    assert_problems(
        problems_of(file),
        [
            ("line 4: persona #2: slug:", "should match pattern"),
            ("line 6: persona #3: name:", "Field required"),
            ("line 10: persona #4: colour:", "Extra inputs are not permitted"),
            ("line 13: persona #5: tags:", "at most 32 items"),
            ("line 18: persona #6: tags.1:", "should match pattern"),
            ("line 19: persona #7: persona:", "valid dictionary"),
        ],
    )


def test_json_problems_are_listed_with_their_line(tmp_path: Path) -> None:
    file = write(
        tmp_path / "personas.json",
        '[\n  {"slug": "ada", "name": "Ada"},\n  {"slug": "Bad", "name": "B", "x": 1},\n  {"slug": "cora"}\n]\n',
    )

    assert_problems(
        problems_of(file),
        [
            ("line 3: persona #2: slug:", "should match pattern"),
            ("line 3: persona #2: x:", "Extra inputs are not permitted"),
            ("line 4: persona #3: name:", "Field required"),
        ],
    )


def test_duplicate_slugs_in_one_file_are_rejected(tmp_path: Path) -> None:
    file = write(
        tmp_path / "personas.yaml",
        "- slug: ada\n  name: Ada\n- slug: basil\n  name: Basil\n- slug: ada\n  name: Ada again\n",
    )

    assert_problems(problems_of(file), [("line 5: persona #3:", "slug 'ada' repeats persona #1")])


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param("- slug: ada\n  name: Ada\n - slug: basil\n  name: Basil\n", 3, id="bad-indent"),
        pytest.param("- slug: ada\n  name: Ada: Lovelace\n", 2, id="colon-in-plain-scalar"),
        pytest.param('- slug: ada\n  name: Ada\n- slug: basil\n  name: "Basil\n- slug: cora\n', 4, id="unclosed-quote"),
        pytest.param("personas:\n  - slug: ada\n    tags: [unclosed\n", 3, id="unclosed-bracket"),
        pytest.param("- slug: ada\n  name: !!python/object:os.system x\n", 2, id="unsafe-tag"),
    ],
)
def test_malformed_yaml_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    file = write(tmp_path / "personas.yaml", text)

    assert_problems(problems_of(file), [(f"line {line}: ", "invalid YAML")])


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param('[\n  {"slug": "ada", "name": "Ada"},\n  {"slug": "b" "name": "B"}\n]\n', 3, id="missing-comma"),
        pytest.param(
            '[\n  {"slug": "ada", "name": "Ada"},\n\n  {"slug": "b", "name": "B"},\n]\n', 5, id="trailing-comma"
        ),
        pytest.param('[\n  {"slug": "ada",\n   "name": "Ada\n', 3, id="unterminated-string"),
    ],
)
def test_malformed_json_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    file = write(tmp_path / "personas.json", text)

    assert_problems(problems_of(file), [(f"line {line}: ", "invalid JSON")])


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("personas.yaml", "42\n", id="yaml-scalar"),
        pytest.param("personas.json", '"ada"', id="json-scalar"),
        pytest.param("personas.yaml", "slug: ada\nname: Ada\n", id="single-persona-mapping"),
        pytest.param("personas.json", '{"personas": {"slug": "ada"}}', id="personas-not-a-list"),
        pytest.param("personas.yaml", "", id="empty-file"),
    ],
)
def test_a_file_without_a_list_of_personas_is_rejected(tmp_path: Path, name: str, text: str) -> None:
    file = write(tmp_path / name, text)

    assert_problems(problems_of(file), [("file: ", "expected a list of personas, or a mapping with a `personas` list")])


def test_non_utf8_file_is_rejected(tmp_path: Path) -> None:
    file = tmp_path / "personas.yaml"
    file.write_bytes("- slug: ada\n  name: Adà\n".encode("latin-1"))

    assert_problems(problems_of(file), [("file: ", "not UTF-8 text")])


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    assert_problems(problems_of(tmp_path / "nowhere.yaml"), [("file: ", "cannot read: No such file or directory")])


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        pytest.param(
            "p.yaml", '- slug: ada\n  name: "Ada\\0"\n', ("line 2: persona #1: name:", "NUL character"), id="yaml-nul"
        ),
        pytest.param(
            "p.yaml",
            "- slug: ada\n  name: Ada\n  traits:\n    history:\n      since: 2020-01-02\n",
            ("line 5: persona #1: traits.history.since:", "a date cannot be stored in JSON; quote it"),
            id="yaml-date",
        ),
        pytest.param(
            "p.yaml",
            "- slug: ada\n  name: Ada\n  traits:\n    scores:\n      - 1\n      - .nan\n",
            ("line 6: persona #1: traits.scores.1:", "nan is not a finite number"),
            id="yaml-nan",
        ),
        pytest.param(
            "p.json",
            '[\n  {"slug": "ada", "name": "Ada",\n   "traits": {"big": 1e400}}\n]\n',
            ("line 3: persona #1: traits.big:", "inf is not a finite number"),
            id="json-overflow",
        ),
        pytest.param(
            "p.json",
            '[{"slug": "ada", "name": "Ada", "traits": {"x": NaN}}]',
            ("line 1: persona #1: traits.x:", "nan is not a finite number"),
            id="json-nan-literal",
        ),
        pytest.param(
            "p.json",
            '[{"slug": "ada", "name": "Ada",\n  "traits": {"x": "\\ud800"}}]',
            ("line 2: persona #1: traits.x:", "unpaired surrogate"),
            id="json-lone-surrogate",
        ),
        pytest.param(
            "p.json",
            '[{"slug": "ada", "name": "Ada", "tags": ["a\\u0000b"]}]',
            ("line 1: persona #1: tags.0:", "NUL character"),
            id="json-nul-tag",
        ),
    ],
)
def test_values_postgresql_cannot_store_are_file_problems(
    tmp_path: Path, name: str, text: str, expected: tuple[str, str]
) -> None:
    file = write(tmp_path / name, text)

    assert_problems(problems_of(file), [expected])


def test_unstorable_traits_do_not_hide_the_personas_other_problems(tmp_path: Path) -> None:
    file = write(
        tmp_path / "p.yaml",
        "- slug: ada\n  name: Ada\n- slug: ada\n  colour: red\n  traits:\n    2021-01-01: launch\n    ok: {1: one}\n",
    )

    assert_problems(
        problems_of(file),
        [
            ("line 3: persona #2: name:", "Field required"),
            ("line 4: persona #2: colour:", "Extra inputs are not permitted"),
            ("line 6: persona #2: traits.2021-01-01:", "key datetime.date(2021, 1, 1) is a date, not text; quote it"),
        ],
    )


EXPECTED = [
    PersonaIn(slug="ada", name="Ada", traits={"tone": {"warmth": 2}}, tags=["a", "b"]),
    PersonaIn(slug="basil", name="Basil", summary="Support"),
]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param(
            "p.yaml",
            "- slug: ada\n  name: Ada\n  traits: {tone: {warmth: 2}}\n  tags: [a, b]\n"
            "- slug: basil\n  name: Basil\n  summary: Support\n",
            id="yaml-bare-list",
        ),
        pytest.param(
            "p.yaml",
            "personas:\n  - slug: ada\n    name: Ada\n    traits:\n      tone:\n        warmth: 2\n"
            "    tags:\n      - a\n      - b\n  - slug: basil\n    name: Basil\n    summary: Support\n",
            id="yaml-personas-mapping",
        ),
        pytest.param("p.json", json.dumps([p.model_dump() for p in EXPECTED]), id="json-bare-list"),
        pytest.param(
            "p.json", json.dumps({"personas": [p.model_dump() for p in EXPECTED]}), id="json-personas-mapping"
        ),
    ],
)
def test_bare_list_and_personas_mapping_read_the_same(tmp_path: Path, name: str, text: str) -> None:
    assert read_persona_file(write(tmp_path / name, text)) == EXPECTED


# --- importing through the CLI: all or nothing -------------------------------------------


@pytest.fixture
def seeded(tenant_factory: TenantFactory) -> str:
    """A fresh tenant holding SEED."""
    return anyio.run(tenant_factory, SEED, "imp").tenant_slug


def stored(targets: Targets, tenant_slug: str) -> list[tuple[str, str, str]]:
    found = anyio.run(lambda: persona_ops.list_personas(SETTINGS, targets, tenant_slug=tenant_slug))
    return [(p.slug, p.name, p.summary) for p in found]


def import_file(targets: Targets, file: Path, tenant_slug: str) -> Result:
    return CliRunner().invoke(
        app,
        ["persona", "import", str(file), "--tenant", tenant_slug],
        env={"MINDSCAPE_DATABASE_URL": targets.runtime, "MINDSCAPE_OWNER_DATABASE_URL": targets.owner},
    )


SEEDED = [("ada", "Ada Analyst", "Seeded"), ("basil", "Basil Support", "")]
# A valid rename of a seeded persona and a valid new one, written before the broken part, so
# that a partial import would show.
GOOD_YAML = "- slug: ada\n  name: Ada Renamed\n- slug: dora\n  name: Dora New\n"
GOOD_JSON = '[\n  {"slug": "ada", "name": "Ada Renamed"},\n  {"slug": "dora", "name": "Dora New"},\n'


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        pytest.param(
            "p.yaml", GOOD_YAML + "- slug: Bad Slug\n  name: Bad\n", "line 5: persona #3: slug:", id="bad-slug"
        ),
        pytest.param("p.yaml", GOOD_YAML + "- slug: eve\n", "line 5: persona #3: name: Field required", id="no-name"),
        pytest.param("p.yaml", GOOD_YAML + "- slug: dora\n  name: Dora\n", "line 5: persona #3: slug 'dora'", id="dup"),
        pytest.param("p.yaml", GOOD_YAML + "- slug: eve\n  name: 'Eve\n", "line 6: invalid YAML", id="yaml-syntax"),
        pytest.param(
            "p.json", GOOD_JSON + '  {"slug": "eve" "name": "Eve"}\n]', "line 4: invalid JSON", id="json-syntax"
        ),
        pytest.param(
            "p.json", GOOD_JSON + '  {"slug": "eve", "name": "Eve\\u0000"}\n]', "line 4: persona #3: name:", id="nul"
        ),
        pytest.param("p.yaml", "ada\n", "file: expected a list of personas", id="scalar"),
        pytest.param("p.yaml", (GOOD_YAML + "- slug: é\n").encode("latin-1"), "file: not UTF-8 text", id="latin-1"),
        pytest.param("p.yaml", None, "file: cannot read", id="missing"),
    ],
)
def test_rejected_file_writes_nothing(
    targets: Targets, seeded: str, tmp_path: Path, name: str, content: str | bytes | None, expected: str
) -> None:
    file = tmp_path / name
    if isinstance(content, str):
        file.write_text(content, encoding="utf-8")
    elif isinstance(content, bytes):
        file.write_bytes(content)

    result = import_file(targets, file, seeded)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "was not imported" in result.stderr
    assert "nothing was written" in result.stderr
    assert expected in result.stderr
    assert stored(targets, seeded) == SEEDED


def test_valid_file_is_imported_whole(targets: Targets, seeded: str, tmp_path: Path) -> None:
    """The control for the test above: the same good part alone does land."""
    file = write(tmp_path / "p.yaml", GOOD_YAML)

    result = import_file(targets, file, seeded)

    assert result.exit_code == 0, result.output
    assert "1 created, 1 updated, 0 unchanged" in result.stdout
    assert stored(targets, seeded) == [
        ("ada", "Ada Renamed", ""),
        ("basil", "Basil Support", ""),
        ("dora", "Dora New", ""),
    ]


async def test_write_the_database_rejects_rolls_back_the_whole_import(targets: Targets, seeded: str) -> None:
    # Built past validation: the table's CHECK (length(name) <= 200) refuses the third upsert.
    too_long = PersonaIn.model_construct(slug="eve", name="E" * 201, summary="", traits={}, instructions="", tags=[])
    items = [persona("ada", "Ada Renamed"), persona("dora", "Dora New"), too_long]

    with pytest.raises(asyncpg.PostgresError):
        await persona_ops.import_personas(SETTINGS, targets, tenant_slug=seeded, items=items)

    after = await persona_ops.list_personas(SETTINGS, targets, tenant_slug=seeded)
    assert [(p.slug, p.name, p.summary) for p in after] == SEEDED


def test_cli_prints_the_problems_verbatim(targets: Targets, seeded: str, tmp_path: Path) -> None:
    # The slug problem quotes a regex full of [...], which a markup-rendering console would eat.
    file = write(tmp_path / "p.yaml", GOOD_YAML + "- slug: Bad Slug\n  name: Bad\n")
    with pytest.raises(ImportFileError) as caught:
        read_persona_file(file)

    result = import_file(targets, file, seeded)

    assert result.exit_code == 1
    assert result.stderr == f"error: {caught.value}\n"
    assert "'^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$'" in result.stderr
