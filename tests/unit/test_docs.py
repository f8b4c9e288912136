"""Documents generated from the code stay current, and the README's commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from pfconvert.cli.finetune import FIELDS, PANELS, flag_of
from pfconvert.recover.finetune.config import FinetuneConfig
from pfconvert.rules.language import rule_language_markdown

REPO = Path(__file__).resolve().parents[2]


def test_rule_language_reference_is_current() -> None:
    """docs/rule-language.md is generated from the schema and the op registry; regenerate it with
    `python -m pfconvert.rules.language > docs/rule-language.md`."""
    assert (REPO / "docs" / "rule-language.md").read_text() == rule_language_markdown()


def test_every_config_field_has_one_finetune_flag() -> None:
    fields = [name for names in PANELS.values() for name in names]
    assert sorted(fields) == sorted(FinetuneConfig.model_fields) and len(fields) == len(set(fields))


def test_the_flags_are_generated_from_the_fields_pydantic_sees() -> None:
    """The command line reads FinetuneConfig's settings table (to start without pydantic): pydantic's fields are its
    rows, with the same types, defaults, bounds and descriptions."""
    assert list(FIELDS) == list(FinetuneConfig.model_fields)
    for name, field in FinetuneConfig.model_fields.items():
        row = FIELDS[name]
        assert (row.type, row.required, row.description) == (field.annotation, field.is_required(), field.description)
        assert row.required or row.default == field.default
        bounds = {key: getattr(m, key) for m in field.metadata for key in ("ge", "gt", "lt", "le") if hasattr(m, key)}
        assert bounds == row.bounds, name


def test_the_finetune_flags_the_docs_name_exist() -> None:
    """Every `pfconvert finetune` flag the README and docs mention is one the command has."""
    flags = {flag_of(name) for name in FinetuneConfig.model_fields} | {"--ce-weight", "--resume", "--overwrite",
                                                                        "--report", "--json", "--quiet"}
    flags |= {f"--no-{flag[2:]}" for flag in flags}
    docs = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    for doc in docs:
        for line in doc.read_text().splitlines():
            if line.startswith("Command: `python"):
                continue  # a results page's own benchmark command (its script's flags, not finetune's)
            if "pfconvert finetune" in line or "finetune" in line and "--" in line:
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]+", line):
                    assert flag in flags or flag in _other_command_flags(), f"{doc.name}: {flag} in {line!r}"


def _other_command_flags() -> set[str]:
    """Flags of the other commands and of the example scripts, which the same lines may name."""
    import typer.main

    from pfconvert.cli import app as cli

    cli._register()
    group = typer.main.get_command(cli.app)
    names = {opt for command in group.commands.values() for param in command.params
             if param.param_type_name == "option" for opt in (*param.opts, *param.secondary_opts)}
    return names | {"--models", "--quick", "--retrain", "--train-images", "--nproc_per_node", "--help"}
