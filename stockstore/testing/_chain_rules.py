"""The rules a `ChainedStore` depends on, checked on the store under test (API.md section 8).

A store proves here that it can serve as a cache tier and as the source of truth of a
chain: a late, older fill never replaces a newer copy, expired or not; deletes leave
tombstones that refuse such fills.  These tests are written through the public API and
are still to come: the primitives they rest on are being redesigned.  Until then the
`ChainedStore` compositions of stockstore's own suite (tests/test_conformance.py) and
tests/test_chained.py cover these rules for the bundled backends.
"""

from __future__ import annotations

from ._base import SuiteBase


class ChainRuleTests(SuiteBase):
    """The store as a chain's tier and source of truth (to be written)."""
