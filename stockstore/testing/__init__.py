"""The conformance suite, shipped: prove a backend by subclassing `BackendSuite` (see Extending).

::

    from stockstore.testing import BackendSuite

    class TestMyStore(BackendSuite):
        def make_store(self, **options):
            return MyStore(..., **options)

`BackendSuite` needs pytest (``pip install 'stockstore[testing]'``) and is imported on
first use; `FakeClock` and the strict comparisons the suite is written with
(`assert_same`, `assert_record`, `expected`, `difference`) do not need it.
``import stockstore`` never imports this package.
"""

from __future__ import annotations

import pkgutil
import sys
import typing

if "pytest" in sys.modules:  # under pytest: report the suite's failed asserts as it does a test file's
    sys.modules["pytest"].register_assert_rewrite(*(m.name for m in pkgutil.iter_modules(__path__, f"{__name__}.")))

from ._clock import FakeClock
from ._exact import assert_record, assert_same, difference, expected

if typing.TYPE_CHECKING:
    from ._suite import BackendSuite

__all__ = ["BackendSuite", "FakeClock", "assert_record", "assert_same", "difference", "expected"]


def __getattr__(name: str) -> typing.Any:
    if name != "BackendSuite":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from ._suite import BackendSuite
    except ImportError as exc:
        if exc.name != "pytest":
            raise
        raise ImportError("stockstore.testing.BackendSuite needs pytest: pip install 'stockstore[testing]'") from exc
    globals()["BackendSuite"] = BackendSuite  # imported once; later look-ups find it here
    return BackendSuite


def __dir__() -> list[str]:
    return sorted(__all__)
