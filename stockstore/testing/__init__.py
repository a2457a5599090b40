"""Helpers for testing stores: a fake clock and strict comparisons (type and value, floats by bit pattern).

``import stockstore`` never imports this package.
"""

from __future__ import annotations

import pkgutil
import sys

if "pytest" in sys.modules:  # under pytest: report failed asserts here as it does a test file's
    sys.modules["pytest"].register_assert_rewrite(*(m.name for m in pkgutil.iter_modules(__path__, f"{__name__}.")))

from ._clock import FakeClock
from ._exact import assert_record, assert_same, difference, expected

__all__ = ["FakeClock", "assert_record", "assert_same", "difference", "expected"]
