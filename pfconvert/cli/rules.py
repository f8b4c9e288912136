"""``pfconvert rules``: list the built-in rule files, or print one."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..rules import list_rules, load_rules
from ._console import out_console
from ._render import rules_table
from .app import app

__all__ = ["rules_cmd"]


@app.command("rules")
def rules_cmd(
    name: Annotated[Optional[str], typer.Argument(help="Print this rule file's YAML instead of the list.")] = None,
) -> None:
    """List built-in rules with their descriptions (or print one rule file).

    Rule language: a YAML mapping with `name`, `description` and `rules`, a list of
    {name, match, replace, absorb}. match: op (conv2d|attention), depthwise, kernel_size, stride, dilation,
    same_channels, path (globs), path_regex, exclude, parent (class-name globs), stages, blocks, every_nth, offset.
    replace: op max_pool|avg_pool (kernel_size, stride, padding: int or inherit; count_include_pad), identity, shift,
    sequence (steps: pools, identity, shift, keep {stride}), eff_max|pool (attention). absorb: [norm, act].
    The first rule that matches a layer wins.
    """
    if name is not None:
        out_console.print(load_rules(name).text, markup=False, highlight=False)
        return
    out_console.print(rules_table(list_rules()))
