"""`BackendSuite`: every capability of the contract, in one class a backend's tests subclass."""

from __future__ import annotations

from ._batches import BatchTests
from ._chain_rules import ChainRuleTests
from ._closing import ClosingTests
from ._errors import ErrorTests
from ._find import FindTests
from ._frames import FrameTests
from ._hostile import HostileTests
from ._integrity import IntegrityTests
from ._isolation import IsolationTests
from ._keys import KeyTests
from ._lifetimes import LifetimeTests
from ._patch import PatchTests
from ._polymorphism import PolymorphismTests
from ._values import PutGetTests


class BackendSuite(
    PutGetTests,
    BatchTests,
    PatchTests,
    LifetimeTests,
    KeyTests,
    ErrorTests,
    PolymorphismTests,
    IsolationTests,
    FrameTests,
    HostileTests,
    IntegrityTests,
    ChainRuleTests,
    ClosingTests,
    FindTests,
):
    """The conformance suite (the behaviour the docs promise): subclass it and say how to make your store.

    ::

        from stockstore.testing import BackendSuite

        class TestMyStore(BackendSuite):
            def make_store(self, **options):
                return MyStore("myscheme://localhost", **options)

    ``pytest`` on that file runs the whole contract against ``MyStore``.

    **make_store(self, \\*\\*options)** is the one method to write.  It returns a new store
    each time it is called; *options* are ``namespace=`` (a str, except in the test that
    a bad one is refused), ``lifetime=`` (``None`` or anything `BaseStore` takes) and
    ``clock=`` (the test's `FakeClock`).  They are `BaseStore.__init__`'s own arguments:
    pass them on (``**options``) and they just work.  Stores made with one namespace must
    share their data, as two processes on one server would (see
    ``shares_namespace_between_instances``).

    Each test gets a fresh namespace (``self.namespace``) no other test or run uses, and a
    `FakeClock` (``self.clock``) starting at the real time, which lifetime tests tick
    instead of sleeping.  The ``store`` fixture is one store of your backend; more come
    from ``self.make(namespace=..., lifetime=..., clock=...)``, which default to the
    test's namespace and clock.  Every store made is closed when its test ends.

    Servers are yours to provide: an autouse fixture of your class can start one, or skip,
    and keep what `make_store` needs on ``self``::

        class TestMyStore(BackendSuite):
            @pytest.fixture(autouse=True)
            def _server(self, my_server_url):   # a session-scoped fixture of your conftest
                self.url = my_server_url

            def make_store(self, **options):
                return MyStore(self.url, **options)

    The suite uses no markers and no conftest of its own; it runs under
    ``--strict-markers`` and ``filterwarnings = error``.  The DataFrame tests skip
    unless pandas and numpy are installed (``stockstore[pandas]``).

    **Documented gaps** are class attributes; each skips, or turns around, exactly the
    tests named here, and nothing else:

    ``lists_keys = True``
        False for a store that cannot list its keys (memcached): then ``keys``, ``count``,
        ``clear`` of a subclass and ``get_frame(cls)`` without keys must raise
        `UnsupportedOperationError`.  test_keys_count_clear and
        test_keys_count_clear_of_a_subclass assert exactly that; every other test that
        checks what is stored asks `batch_get` for the keys it wrote instead (so a record
        stored under a key the test does not know goes unseen).
    ``counts_cleared = True``
        False for a store whose ``clear(cls)`` removes the records but cannot count them
        and returns 0 (memcached): test_keys_count_clear,
        test_expired_does_not_count_for_delete_or_clear,
        test_namespaces_do_not_see_each_other and
        test_namespaces_that_look_like_patterns_or_keys_see_only_their_own then expect 0.
    ``shares_namespace_between_instances = True``
        False for in-process stores, where each instance holds its own records:
        skips test_same_namespace_shares_data.
    ``shared_between_threads = True``
        False for a store whose records each thread sees apart (``ThreadLocalStore``):
        skips test_concurrent_patches_of_different_attributes_lose_nothing.
    ``grows_versions = True``
        False for a store whose ``_write`` keeps the versions it is handed instead of
        storing ``max(new, held + 1)`` (``RedisMsgpackStore``, for families without
        alternate keys): as a source of truth its versions follow the writers' clocks.
        Skips test_a_write_stores_a_version_newer_than_any_held.
    ``gives_fill_tokens = False``
        True for a store that can lose a copy behind a chain's back (an eviction, a
        restart, a flush) and so gives fill tokens (``_watch``, ``_fill_watched``: a
        late fill of what was read before a write never lands).  With it false,
        ``_watch`` must give none, and the three token tests skip:
        test_a_watched_fill_lands_while_its_token_is_in_place,
        test_a_watched_fill_is_refused_once_the_key_changed and
        test_a_token_is_used_once_and_not_past_its_time.
    ``finds = True``
        False for a store that cannot find records by attribute nor replace a family at
        once (memcached): ``find`` (when run) and ``reset`` must raise
        `UnsupportedOperationError`, which test_find_and_reset_work_or_are_refused_as_finds_says
        asserts; every other find and reset test skips.  ``incr`` and ``UNSET`` are tested
        all the same.
    ``largest_record_size = None``, ``largest_record_error = ""``
        The largest record, in encoded bytes, the backend stores (memcached's item limit,
        MariaDB's ``max_allowed_packet``); ``None`` for none below the tens of megabytes
        test_huge_values writes.  Over it, test_huge_values expects `SerializationError`
        whose message matches the regular expression ``largest_record_error`` (the name
        of the limit, say) and nothing written.  A limit read from the server can be set
        on ``self`` by your autouse fixture.

    One more hook, optional: override ``stored_state(store, cls, key)`` to return what
    your backend holds for a record below the public API (its bytes, version, expiry);
    the hostile-input tests then also require it unchanged for every record they do not
    touch.
    """
