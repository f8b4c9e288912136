"""``pfconvert rules``: list the built-in rule files, print one, or print the rule language."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._console import out_console
from .app import app

__all__ = ["rules_cmd"]


@app.command("rules")
def rules_cmd(
    name: Annotated[Optional[str], typer.Argument(help="Print this rule file's YAML instead of the list.")] = None,
    language: Annotated[bool, typer.Option("--language", help="Print the rule language reference (every match field "
                                           "and every replacement op with its fields) as Markdown.")] = False,
) -> None:
    """List built-in rules with their descriptions (or print one rule file, or the rule language).

    A rule file is YAML: a `name`, a `description` and `rules`, a list of {name, match, replace, absorb}; the first
    rule that matches a layer wins. `pfconvert rules --language` prints every field and op (docs/rule-language.md).
    """
    if language:
        from ..rules.language import rule_language_markdown

        typer.echo(rule_language_markdown(), nl=False)
        return
    if name is not None:
        from ..rules.loading import load_rules

        out_console.print(load_rules(name).text, markup=False, highlight=False)
        return
    from ..rules.loading import list_rules
    from ._render import rules_table

    out_console.print(rules_table(list_rules()))
