"""Find, read and validate rule files: built-in names (``maxpool``) or paths to YAML files."""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import RuleError
from .schema import RuleSet

__all__ = ["LoadedRules", "RuleInfo", "list_rules", "load_rules", "parse_rules"]


@dataclass(frozen=True)
class RuleInfo:
    """A built-in rule file: its name, description and number of rules."""

    name: str
    description: str
    num_rules: int


@dataclass(frozen=True)
class LoadedRules:
    """A validated rule set with the exact text it came from (kept in artifacts so a conversion can be replayed)."""

    ruleset: RuleSet
    text: str
    source: str

    @property
    def sha256(self) -> str:
        """Hash of the rule text, recorded in artifacts."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def name(self) -> str:
        """The rule set's name."""
        return self.ruleset.name


def _builtin_dir() -> Any:
    return importlib.resources.files("pfconvert.builtin_rules")


def _builtin_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in _builtin_dir().iterdir() if p.name.endswith(".yaml"))


def list_rules() -> list[RuleInfo]:
    """List the built-in rule files shipped with pfconvert."""
    infos = []
    for name in _builtin_names():
        loaded = load_rules(name)
        infos.append(RuleInfo(name, loaded.ruleset.description.strip(), len(loaded.ruleset.rules)))
    return infos


def load_rules(rule: str | Path) -> LoadedRules:
    """Load a built-in rule file by name, or a YAML file by path, and validate it.

    Raises:
        RuleError: the name is unknown, the file unreadable, the YAML malformed or the rules invalid.
    """
    text = str(rule)
    if isinstance(rule, str) and text in _builtin_names():
        return parse_rules((_builtin_dir() / f"{text}.yaml").read_text(), source=f"built-in rule '{text}'")
    path = Path(rule)
    if path.suffix.lower() not in (".yaml", ".yml") and not path.exists():
        raise RuleError(f"unknown rule '{text}': not a built-in rule ({', '.join(_builtin_names())}) "
                        "and not a .yaml file; run `pfconvert rules` to list them")
    try:
        content = path.read_text()
    except FileNotFoundError:
        raise RuleError(f"rule file not found: {path}; check the path or run `pfconvert rules`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"cannot read rule file {path}: {exc}") from None
    return parse_rules(content, source=str(path))


def parse_rules(text: str, source: str = "<string>") -> LoadedRules:
    """Validate rule-file text. ``source`` names the file in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RuleError(f"{source}: malformed YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise RuleError(f"{source}: a rule file must be a mapping with 'name' and 'rules' keys")
    try:
        ruleset = RuleSet.model_validate(data)
    except ValidationError as exc:
        raise RuleError(f"{source}: {_describe(exc, data)}") from None
    return LoadedRules(ruleset=ruleset, text=text, source=source)


_OP_TAGS = {"max_pool", "avg_pool", "identity", "shift", "sequence", "keep", "eff_max", "pool"}


def _describe(exc: ValidationError, data: dict[str, Any]) -> str:
    """One line naming the rule and field of the first validation error, and what was expected."""
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p in _OP_TAGS and p != err["loc"][-1])]
    where = ""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules") or []
        raw = rules[loc[1]] if loc[1] < len(rules) else None
        name = raw.get("name") if isinstance(raw, dict) else None
        where = f"rule '{name}' (rules[{loc[1]}])" if name else f"rules[{loc[1]}]"
        loc = loc[2:]
    field = ".".join(str(p) for p in loc)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see `pfconvert rules --help` for the rule language)"
    elif err["type"] == "union_tag_invalid":
        given = err.get("input")
        given = given.get("op") if isinstance(given, dict) else given
        msg = f"unknown op {given!r}; expected one of {', '.join(sorted(_OP_TAGS - {'keep'}))}"
    elif err["type"] == "union_tag_not_found":
        msg = "missing 'op'"
    parts = [p for p in (where, f"field '{field}'" if field else "") if p]
    return f"{', '.join(parts)}: {msg}" if parts else msg
