"""Imports every command module so that each registers its command(s) on :data:`pfconvert.cli.app.app`."""

from __future__ import annotations

from . import convert as convert  # noqa: F401
from . import rules as rules  # noqa: F401
