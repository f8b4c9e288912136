"""The groups a study converts one at a time: a stage (as read from module paths by
:func:`pfconvert.graph.match.stage_block`; layers in no stage form the group 'other'), or a single layer.

A group is a typed value, not its label parsed back: the planner restricts a rule to stages by their numbers
(:attr:`StageGroup.stage`), and the label (``stage 2``, ``other``, a layer's path) is only what is shown and written
to JSON.

Example::

    >>> sorted([StageGroup(None), StageGroup(3), StageGroup(1)])
    [StageGroup(stage=1), StageGroup(stage=3), StageGroup(stage=None)]
    >>> StageGroup(2).label, StageGroup.from_label("other")
    ('stage 2', StageGroup(stage=None))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Union

__all__ = ["StageGroup", "LayerGroup", "Group", "OTHER"]

OTHER = "other"
"""The label of the layers that belong to no stage."""


@functools.total_ordering
@dataclass(frozen=True)
class StageGroup:
    """The layers of one stage (``stage`` counted from 0), or of no stage (``None``: 'other'). Ordered by stage,
    'other' last."""

    stage: int | None

    @property
    def label(self) -> str:
        """``stage 2``, or ``other``."""
        return f"stage {self.stage}" if self.stage is not None else OTHER

    @property
    def staged(self) -> bool:
        """Whether the group is a stage (a rule can be restricted to it by ``stages:``)."""
        return self.stage is not None

    def __str__(self) -> str:
        return self.label

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, StageGroup):
            return NotImplemented
        return self._key() < other._key()

    def _key(self) -> tuple[int, int]:
        return (0, self.stage) if self.stage is not None else (1, 0)

    def to_json(self) -> str:
        """The JSON form: the label."""
        return self.label

    @classmethod
    def from_label(cls, label: str) -> StageGroup:
        """The group of a label (:attr:`label`, as ``to_json`` writes it).

        Raises:
            ValueError: ``label`` is neither ``stage N`` (N >= 0) nor ``other``.
        """
        if label == OTHER:
            return cls(None)
        head, _, number = label.partition(" ")
        if head != "stage" or not number.isdigit():
            raise ValueError(f"not a stage group: {label!r} (expected 'stage N' or '{OTHER}')")
        return cls(int(number))


@dataclass(frozen=True)
class LayerGroup:
    """One layer, by its qualified module name (a study ``by="layer"``)."""

    path: str

    @property
    def label(self) -> str:
        """The layer's path."""
        return self.path

    def __str__(self) -> str:
        return self.label

    def to_json(self) -> str:
        """The JSON form: the layer's path."""
        return self.path


Group = Union[StageGroup, LayerGroup]
"""A group of a study: a stage (or 'other') or a single layer."""
