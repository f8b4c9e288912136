"""Op versions in artifacts: each replacement records the ops it was built from and their versions (the op
registry's ``version``, :mod:`pfconvert.ops._registry`), so that loading an artifact never replays its rules with
ops whose meaning changed since.

Loading compares the recorded versions with the installed ones: equal, the rules replay as they are; older, with a
migration for every step (``register_op(..., migrations={v: rewrite})``), the rule text's specs are rewritten to
the current ops' equivalents before replay; otherwise :func:`replay_rules` refuses in one line naming the op, both
versions and the fix. Artifacts made before versions were recorded hold version 1 of every op they use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ArtifactError
from ..ops._registry import OpSpec, get_op
from ..rules import parse_rules

if TYPE_CHECKING:
    from ..rules.loading import LoadedRules
    from .artifact import Recipe

__all__ = ["spec_ops", "op_versions", "recorded_versions", "replay_rules"]


def spec_ops(spec: OpSpec) -> list[str]:
    """The ops a replace spec builds: its own and, in order, those of its steps (``sequence``)."""
    names = [spec.op]  # type: ignore[attr-defined]
    for name in type(spec).model_fields:
        value = getattr(spec, name)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, OpSpec):
                names += [n for n in spec_ops(item) if n not in names]
    return names


def op_versions(spec: OpSpec) -> dict[str, int]:
    """``{op: installed version}`` for every op ``spec`` builds: what a replacement records."""
    return {name: get_op(name).version for name in spec_ops(spec)}


def recorded_versions(recipe: Recipe, loaded: LoadedRules, where: str) -> dict[str, int]:
    """``{op: version}`` the artifact's replacements were built with (version 1 where none is recorded)."""
    rules = {rule.name: rule for rule in loaded.ruleset.rules}
    found: dict[str, int] = {}
    for entry in recipe.replaced:
        ops: Any = entry.ops
        if not ops:  # recorded before ops were (no replacement is built from no op)
            rule = rules.get(entry.rule)
            ops = {name: 1 for name in spec_ops(rule.replace)} if rule is not None else {}  # type: ignore[arg-type]
        if not isinstance(ops, dict) or not all(isinstance(k, str) and type(v) is int for k, v in ops.items()):
            raise ArtifactError(f"{where}: malformed recipe, field 'replaced.ops': {ops!r} (op name -> version)")
        for name, version in ops.items():
            if found.setdefault(name, version) != version:
                raise ArtifactError(f"{where}: malformed recipe: op {name!r} recorded as versions {found[name]} "
                                    f"and {version}")
    return found


def _migrate(value: Any, steps: dict[str, tuple[int, int]]) -> Any:
    """``value`` (a spec as parsed from YAML, or anything inside one) with every spec of a migrated op rewritten."""
    if isinstance(value, list):
        return [_migrate(item, steps) for item in value]
    if not isinstance(value, dict):
        return value
    value = {k: _migrate(v, steps) for k, v in value.items()}
    name = value.get("op")
    if isinstance(name, str) and name in steps:
        start, end = steps[name]
        for version in range(start, end):
            value = get_op(name).migrations[version](dict(value))
    return value


def replay_rules(recipe: Recipe, where: Path, source: str) -> LoadedRules:
    """The artifact's rules, ready to replay with the installed ops: as recorded, or migrated.

    Raises:
        ArtifactError: an op is unknown here, newer than installed, or older with no migration.
    """
    import yaml

    from ..rules.loading import LoadedRules
    from ..rules.schema import RuleSet

    loaded = parse_rules(recipe.rule_text, source=source)
    made = recipe.versions.get("pfconvert", "?")
    steps: dict[str, tuple[int, int]] = {}
    for name, old in recorded_versions(recipe, loaded, str(where)).items():
        try:
            now = get_op(name).version
        except KeyError:
            raise ArtifactError(f"{where}: op {name!r} is not installed (pfconvert {made} made this artifact); "
                                "install the package that registers it") from None
        if old > now:
            raise ArtifactError(f"{where}: op {name!r} is version {old} in this artifact but version {now} here; "
                                f"upgrade pfconvert (pfconvert {made} made it)")
        if old < now:
            missing = [v for v in range(old, now) if v not in get_op(name).migrations]
            if missing:
                raise ArtifactError(
                    f"{where}: op {name!r} was version {old} when this artifact was made (pfconvert {made}) and is "
                    f"version {now} now, a different operation; replaying it would build another network: convert "
                    f"the model again (`pfconvert convert`) or load the artifact with pfconvert {made}")
            steps[name] = (old, now)
    if not steps:
        return loaded
    data = _migrate(yaml.safe_load(recipe.rule_text), steps)
    try:
        ruleset = RuleSet.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ArtifactError(f"{where}: migrating ops {', '.join(sorted(steps))} gave invalid rules: "
                            f"{' '.join(str(exc).split())[:200]}") from None
    return LoadedRules(ruleset=ruleset, text=recipe.rule_text, source=source)
