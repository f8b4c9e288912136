"""Imports every command module so that each registers its command(s) on :data:`pfconvert.cli.app.app`."""

from __future__ import annotations

from . import convert as convert  # noqa: F401
from . import evaluate as evaluate  # noqa: F401
from . import export as export  # noqa: F401
from . import finetune as finetune  # noqa: F401
from . import report as report  # noqa: F401
from . import rules as rules  # noqa: F401
from . import sensitivity as sensitivity  # noqa: F401
from . import plan as plan  # noqa: F401
