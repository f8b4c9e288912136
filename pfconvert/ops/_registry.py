"""The replacement-op registry: one registration per op holds everything pfconvert knows about it.

An op is a pydantic spec (the fields a rule's ``replace:`` may set, with ``op: Literal["name"]`` as its tag) and a
builder that turns the spec and the matched layer into an ``nn.Module``. :func:`register_op` records, next to them:

- ``sites``: the kinds of layer it may replace (``conv2d``, ``attention``);
- ``passes_input``: whether the module it builds may hand back its input (or a view of it) instead of a new tensor;
  conversion then makes in-place consumers out-of-place so that they do not overwrite a residual;
- ``in_sequence`` / ``top_level``: whether it may be a step of ``op: sequence`` / a rule's whole replacement;
- ``counts``: how the aten ops it emits are counted (:class:`Count`), read by :mod:`pfconvert.report.counting`;
- ``fast_kernels``: module classes to swap for a faster inference kernel at deploy time
  (:func:`pfconvert.deploy.use_fast_kernels`);
- ``version`` and ``migrations``: the version of the op's meaning (what a spec builds), recorded with every
  replacement in an artifact; raise it whenever the same spec would build a different module (a new default, a
  changed geometry rule), and give ``migrations[v]``, a function that rewrites a version-``v`` spec (a dict) into
  a version-``v + 1`` spec of the same meaning, where one exists. Loading an artifact of an older version migrates
  its specs, or refuses in one line (:mod:`pfconvert.conversion.versions`).

Everything else is derived from the registrations: the rule schema's ``replace`` union and its error messages
(:mod:`pfconvert.rules.schema`), the rule-language reference (:mod:`pfconvert.rules.language`) and the counting
handles. Every public module of this package is an op module and is imported by :func:`load_builtin_ops`; so is
every module named by a ``pfconvert.ops`` entry point. See ``docs/extending.md``.
"""

from __future__ import annotations

import enum
import importlib
import pkgutil
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from torch import nn

    from ..graph.geometry import ConvGeometry

__all__ = ["SITE_KINDS", "OpSpec", "Count", "BuildContext", "OpDef", "register_op", "get_op", "list_ops", "op_names",
           "load_builtin_ops"]

SITE_KINDS = ("conv2d", "attention")
"""Kinds of layer a rule can match (``match.op``) and an op can replace."""


class OpSpec(BaseModel):
    """Base of every op's rule fields. A subclass declares ``op: Literal["its name"]`` and its own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def aliases_input(self) -> bool:
        """Whether the built module may return its input, or a view of it, instead of a new tensor."""
        return get_op(self.op).passes_input  # type: ignore[attr-defined]

    def keeps_layer(self) -> bool:
        """Whether the built module contains the replaced layer itself (it may then change the channel count)."""
        return False


class Count(enum.Enum):
    """How an aten op emitted by a replacement is counted (MACs stay fvcore's; pooling is counted apart)."""

    POOL_WINDOW = "pool_window"
    """One pool op per window element per output value (a comparison or an addition)."""
    FREE = "free"
    """Data movement only (pad, slice, concatenate): 0."""


@dataclass(frozen=True)
class BuildContext:
    """The matched layer a replacement is built for, and the model it sits in (a ViT's token grid lives there)."""

    module: nn.Module
    path: str
    model: nn.Module
    geometry: ConvGeometry | None = None
    input_shapes: tuple[tuple[int, ...], ...] = ()
    """The input shape of every call of the layer in the traced forward (empty when built outside a conversion)."""

    def error(self, message: str) -> Exception:
        """A :class:`~pfconvert.errors.ConversionError` naming this layer: ``raise ctx.error("...")``."""
        from ..errors import ConversionError

        return ConversionError(f"layer '{self.path}': {message}")

    def build(self, spec: OpSpec) -> nn.Module:
        """Build another op (a step of a sequence) for the same layer."""
        return get_op(spec.op).build(spec, self)  # type: ignore[attr-defined]


Builder = Callable[[Any, BuildContext], "nn.Module"]
Migration = Callable[[dict[str, Any]], dict[str, Any]]
"""Rewrites a spec (as a dict, ``op`` included) of one op version into the next version's spec of the same meaning."""


@dataclass(frozen=True)
class OpDef:
    """One registered op (see the module docstring)."""

    name: str
    spec: type[OpSpec]
    build: Builder
    sites: frozenset[str]
    passes_input: bool = False
    in_sequence: bool = True
    top_level: bool = True
    counts: Mapping[str, Count] = field(default_factory=dict)
    fast_kernels: Mapping[type, Callable[[Any], Any]] = field(default_factory=dict)
    module: str = ""
    version: int = 1
    migrations: Mapping[int, Migration] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The first paragraph of the spec's docstring, on one line."""
        doc = (self.spec.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(doc.split())


_OPS: dict[str, OpDef] = {}
_LOADED = False


def _tag(spec: type[OpSpec]) -> str:
    field_info = spec.model_fields.get("op")
    args = typing.get_args(field_info.annotation) if field_info is not None else ()
    if len(args) != 1 or not isinstance(args[0], str):
        raise TypeError(f"{spec.__name__} must declare its tag as `op: Literal['name']`")
    return args[0]


def register_op(spec: type[OpSpec], *, sites: Iterable[str] = ("conv2d",), passes_input: bool = False,
                in_sequence: bool = True, top_level: bool = True, counts: Mapping[str, Count] | None = None,
                fast_kernels: Mapping[type, Callable[[Any], Any]] | None = None, version: int = 1,
                migrations: Mapping[int, Migration] | None = None) -> Callable[[Builder], Builder]:
    """Register the decorated builder ``(spec, ctx: BuildContext) -> nn.Module`` as the op ``spec`` tags.

    Example::

        class MinPoolSpec(OpSpec):
            \"\"\"Min-pool: ``-max_pool(-x)``.\"\"\"
            op: Literal["min_pool"]

        @register_op(MinPoolSpec, counts={"aten::max_pool2d": Count.POOL_WINDOW})
        def build_min_pool(spec: MinPoolSpec, ctx: BuildContext) -> nn.Module: ...
    """
    name = _tag(spec)
    kinds = frozenset(sites)
    unknown = kinds - set(SITE_KINDS)
    if unknown or not kinds:
        raise ValueError(f"op {name!r}: sites must be among {SITE_KINDS}, got {sorted(kinds)}")
    if version < 1 or any(not 1 <= v < version for v in (migrations or {})):
        raise ValueError(f"op {name!r}: version must be >= 1 and migrations keyed by earlier versions")

    def decorate(build: Builder) -> Builder:
        previous = _OPS.get(name)
        if previous is not None and previous.module != build.__module__:
            raise ValueError(f"op {name!r} is registered twice ({previous.module} and {build.__module__})")
        _OPS[name] = OpDef(name, spec, build, kinds, passes_input, in_sequence, top_level, dict(counts or {}),
                           dict(fast_kernels or {}), build.__module__, version, dict(migrations or {}))
        return build

    return decorate


def load_builtin_ops() -> None:
    """Import every op module of this package and of installed ``pfconvert.ops`` entry points (once)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    package = importlib.import_module(__package__)  # type: ignore[arg-type]
    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")
    for entry in entry_points(group="pfconvert.ops"):
        importlib.import_module(entry.value.split(":")[0])


def get_op(name: str) -> OpDef:
    """The registered op ``name``; KeyError for an unknown one (rule validation reports unknown ops first)."""
    load_builtin_ops()
    return _OPS[name]


def list_ops() -> list[OpDef]:
    """Every registered op: those for conv layers first, then by module, then in registration order (the same order
    whatever imported the op modules first)."""
    load_builtin_ops()
    order = {name: index for index, name in enumerate(_OPS)}
    return sorted(_OPS.values(), key=lambda op: ("conv2d" not in op.sites, op.module, order[op.name]))


def op_names(*, top_level: bool | None = None, in_sequence: bool | None = None) -> list[str]:
    """Names of the registered ops, optionally only those that may be a whole replacement / a sequence step."""
    return [op.name for op in list_ops() if (top_level is None or op.top_level == top_level)
            and (in_sequence is None or op.in_sequence == in_sequence)]
