"""Find, read and validate rule files: built-in names (``maxpool``) or paths to YAML files.

Listing the built-in rules reads their YAML only (no validation, no torch): ``pfconvert rules`` answers at once. The
test suite validates every built-in file.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import RuleError

if TYPE_CHECKING:
    from .schema import RuleSet

__all__ = ["LoadedRules", "RuleInfo", "list_rules", "builtin_names", "builtin_text", "load_rules", "parse_rules"]

MAX_RULE_BYTES = 1 << 20
"""Largest rule file read (1 MiB): rule files are a few hundred bytes; anything larger is not one."""
MAX_ALIASES = 64
"""Most YAML aliases (``*name``) a rule file may use: each alias repeats its anchor's content, so a few nested ones
make an exponentially large document (a "billion laughs")."""


class _RuleLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python tags), counting aliases."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases; write the rules out")
        return super().compose_node(parent, index)


def _safe_load(text: str) -> Any:
    loader = _RuleLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


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
        return rule_sha256(self.text)

    @property
    def name(self) -> str:
        """The rule set's name."""
        return self.ruleset.name


def rule_sha256(text: str) -> str:
    """The hash artifacts record for a rule text."""
    return hashlib.sha256(text.encode()).hexdigest()


def _builtin_dir() -> Any:
    return importlib.resources.files("pfconvert.builtin_rules")


def builtin_names() -> list[str]:
    """Names of the built-in rule files, sorted."""
    return sorted(p.name[: -len(".yaml")] for p in _builtin_dir().iterdir() if p.name.endswith(".yaml"))


def builtin_text(name: str) -> str:
    """The YAML text of a built-in rule file."""
    return (_builtin_dir() / f"{name}.yaml").read_text()


def list_rules() -> list[RuleInfo]:
    """List the built-in rule files shipped with pfconvert (name, description, number of rules)."""
    infos = []
    for name in builtin_names():
        data = yaml.safe_load(builtin_text(name)) or {}
        infos.append(RuleInfo(name, str(data.get("description", "")).strip(), len(data.get("rules") or [])))
    return infos


def _read(path: Path) -> str:
    """The text of a rule file: a regular file of at most :data:`MAX_RULE_BYTES` bytes, UTF-8."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise RuleError(f"rule file not found: {path}; check the path or run `pfconvert rules`") from None
    except OSError as exc:
        raise RuleError(f"cannot read rule file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise RuleError(f"rule file {path} is not a regular file (a directory, FIFO or device); give a .yaml file")
    if info.st_size > MAX_RULE_BYTES:
        raise RuleError(f"rule file {path} is {info.st_size} bytes; rule files are at most {MAX_RULE_BYTES} bytes")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RuleError(f"rule file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise RuleError(f"cannot read rule file {path}: {exc.strerror or exc}") from None


def load_rules(rule: str | Path) -> LoadedRules:
    """Load a built-in rule file by name, or a YAML file by path, and validate it.

    Raises:
        RuleError: the name is unknown, the file unreadable, the YAML malformed or the rules invalid.
    """
    text = str(rule)
    if isinstance(rule, str) and text in builtin_names():
        return parse_rules(builtin_text(text), source=f"built-in rule '{text}'")
    path = Path(rule)
    if path.suffix.lower() not in (".yaml", ".yml") and not path.exists():
        raise RuleError(f"unknown rule '{text}': not a built-in rule ({', '.join(builtin_names())}) "
                        "and not a .yaml file; run `pfconvert rules` to list them")
    return parse_rules(_read(path), source=str(path))


def parse_rules(text: str, source: str = "<string>") -> LoadedRules:
    """Validate rule-file text. ``source`` names the file in error messages."""
    from pydantic import ValidationError

    from .schema import RuleSet

    try:
        data = _safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["?"])[0]
        raise RuleError(f"{source}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise RuleError(f"{source}: YAML nested too deeply") from None
    if not isinstance(data, dict):
        raise RuleError(f"{source}: a rule file must be a mapping with 'name' and 'rules' keys")
    try:
        ruleset = RuleSet.model_validate(data)
    except ValidationError as exc:
        raise RuleError(f"{source}: {_describe(exc, data)}") from None
    except RecursionError:
        raise RuleError(f"{source}: rules nested too deeply") from None
    return LoadedRules(ruleset=ruleset, text=text, source=source)


_TYPE_BRANCH = re.compile(r"^(int|float|str|bool|list\[.*\]|literal\[.*\]|function-.*)$")


def _branch_text(branch: object) -> str:
    """``int`` -> "an integer", ``literal['inherit']`` -> "'inherit'" (the members of a failed union, in words)."""
    text = str(branch)
    if text.startswith("literal["):
        return text[len("literal["):-1]
    return {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}.get(text, text)


def _describe(exc: Any, data: dict[str, Any]) -> str:
    """One line naming the rule and field of the first validation error, and what was expected."""
    from ..ops import op_names

    tags = set(op_names())
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p in tags and p != err["loc"][-1])]
    while loc and isinstance(loc[-1], str) and _TYPE_BRANCH.match(loc[-1]):  # the member of a union that failed
        loc.pop()
        err = {**err, "msg": "expected " + " or ".join(sorted({_branch_text(e["loc"][-1]) for e in exc.errors()
                                                               if e["loc"][:-1] == err["loc"][:-1]}))}
    where = ""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules") or []
        raw = rules[loc[1]] if isinstance(rules, list) and loc[1] < len(rules) else None
        name = raw.get("name") if isinstance(raw, dict) else None
        where = f"rule '{name}' (rules[{loc[1]}])" if isinstance(name, str) and name else f"rules[{loc[1]}]"
        loc = loc[2:]
    field = ".".join(str(p) for p in loc)
    msg = " ".join(err["msg"].removeprefix("Value error, ").split())
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see `pfconvert rules --language` for the rule language)"
    elif err["type"] == "union_tag_invalid":
        given = err.get("input")
        given = given.get("op") if isinstance(given, dict) else given
        allowed = op_names(in_sequence=True) if "steps" in loc else op_names(top_level=True)
        msg = f"unknown op {given!r}; expected one of {', '.join(sorted(allowed))}"
    elif err["type"] == "union_tag_not_found":
        msg = "missing 'op'"
    parts = [p for p in (where, f"field '{field}'" if field else "") if p]
    return f"{', '.join(parts)}: {msg}" if parts else msg
