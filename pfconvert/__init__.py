"""pfconvert: redesign vision models with parameter-free layers (Han et al., ICLR 2022).

Library API::

    import pfconvert
    model, record = pfconvert.convert("mobilenetv2_100", "maxpool")
    pfconvert.save(model, record, "out/mnv2-maxpool")
    model = pfconvert.load("out/mnv2-maxpool")
"""

from __future__ import annotations

from .artifact import load as load
from .artifact import save as save
from .convert import ConversionRecord as ConversionRecord
from .convert import Replacement as Replacement
from .convert import convert as convert
from .errors import PfconvertError as PfconvertError
from .rules import list_rules as list_rules
from .rules import load_rules as load_rules

__version__ = "0.1.0"

__all__ = ["convert", "load", "save", "list_rules", "load_rules", "ConversionRecord", "Replacement",
           "PfconvertError", "__version__"]
