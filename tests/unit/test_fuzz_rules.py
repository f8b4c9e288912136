"""Fuzzing the rule loader (hypothesis, bounded): any text gives valid rules or a one-line ``RuleError``; never
another exception, never a hang."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pfconvert.errors import RuleError
from pfconvert.ops import list_ops
from pfconvert.rules import builtin_names, parse_rules
from pfconvert.rules.loading import MAX_ALIASES, builtin_text
from pfconvert.rules.predicates import list_predicates, predicate_fields
from pfconvert.rules.schema import Rule, RuleSet

KEYS = sorted({*RuleSet.model_fields, *Rule.model_fields, *predicate_fields(),
               *(name for op in list_ops() for name in op.spec.model_fields), "norm", "act"})
"""Every key of the rule language: the rule set's and rules', every registered predicate's and op's fields."""
WORDS = list(dict.fromkeys([*(op.name for op in list_ops()), *(p.example for p in list_predicates()), "conv2d",
                             "attention", "inherit", "norm", "act", "layer*", "(", "Bottleneck"]))
"""Values that make a field valid (each op's name, each predicate's example) or nearly so."""
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                    st.sampled_from(WORDS), st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
                      max_leaves=30)


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM after ``seconds``."""
    def expired(*_: object) -> None:
        raise TimeoutError(f"parse_rules took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _check(text: str) -> None:
    with _deadline(10):
        try:
            loaded = parse_rules(text, source="fuzz.yaml")
        except RuleError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("fuzz.yaml")
        else:
            assert loaded.ruleset.rules and loaded.text == text


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4))
def test_structures_near_the_schema(data: dict) -> None:
    _check(yaml.safe_dump(data))


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.sampled_from(builtin_names()), st.integers(0, 10_000), st.text(max_size=20))
def test_built_in_rules_with_text_spliced_in(name: str, at: int, noise: str) -> None:
    text = builtin_text(name)
    at %= len(text) + 1
    _check(text[:at] + noise + text[at:])


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    _check(text)


def _refused(text: str, reason: str) -> None:
    with _deadline(10), pytest.raises(RuleError, match=reason) as info:
        parse_rules(text, source="fuzz.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("fuzz.yaml")


def _aliased_rules(n: int) -> str:
    """A valid rule file of ``n + 1`` rules, the last ``n`` of which alias the first one's ``match``."""
    rules = ["{name: r0, match: &m {op: conv2d}, replace: {op: identity}}"]
    rules += [f"{{name: r{i}, match: *m, replace: {{op: identity}}}}" for i in range(1, n + 1)]
    return "name: x\nrules:\n" + "".join(f"  - {rule}\n" for rule in rules)


def test_alias_bombs_and_python_tags_are_refused() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{k}: &{k} [{', '.join([f'*{p}'] * 9)}]\n" for p, k in zip("abcdefgh", "bcdefghi")) + "name: x\nrules: *i\n"
    _refused(bomb, f"more than {MAX_ALIASES} aliases")
    _refused("a: &a {name: r}\nname: x\nrules: [" + ", ".join(["*a"] * 200) + "]\n", "aliases; write the rules out")
    _refused("!!python/object/apply:os.system ['echo pwned']\n", "malformed YAML")


def test_the_alias_limit_is_exact() -> None:
    """Up to MAX_ALIASES aliases is a rule file like any other; one more is refused, however harmless."""
    assert len(parse_rules(_aliased_rules(MAX_ALIASES), source="fuzz.yaml").ruleset.rules) == MAX_ALIASES + 1
    _refused(_aliased_rules(MAX_ALIASES + 1), f"more than {MAX_ALIASES} aliases")
