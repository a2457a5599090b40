"""`from_config`: a store, or a chain top tier first, from what a settings file or dict holds."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ._chained import ChainedStore
from ._store import BaseStore
from ._url import from_url
from .errors import StoreError

# ChainedStore's options, at the top of a config mapping; its clock and sleep are for tests only.
_CHAIN_OPTIONS = ("down_for", "lease_for", "retries", "tombstone_ttl")
_TOP = ("namespace", "tiers", *_CHAIN_OPTIONS)
_OWN_NAMESPACE = re.compile(r"(?:^|&)namespace=")


def from_config(config: str | Sequence[str | Mapping[str, Any]] | Mapping[str, Any]) -> BaseStore:
    """Build a store, or a `ChainedStore` top tier first, from configuration.

    *config* is one of::

        "memory:// sqlite:///x.db"                  # URLs separated by whitespace (STOCKSTORE_URL)
        ["memory://?lifetime=30", "sqlite:///x.db"]  # a list of URLs, or of tier mappings
        {"tiers": [{"url": "memory://", "lifetime": 30}, {"url": "sqlite:///x.db"}],
         "namespace": "analytics", "tombstone_ttl": 60}

    A tier mapping's keys besides ``url`` are the store's options, checked like the
    URL's own.  A top-level ``namespace`` is every tier's unless the tier sets one (in
    its URL or its mapping): the tiers of one chain normally share it.  The other
    top-level keys are `ChainedStore`'s options.  One tier gives that store, unchained.
    Anything unknown or malformed raises `StoreError` naming it.
    """
    if isinstance(config, str):
        config = config.split()  # whitespace never appears in a URL unencoded
    if isinstance(config, Mapping):
        unknown = sorted(set(config) - set(_TOP))
        if unknown:
            raise StoreError(f"unknown configuration key {unknown[0]!r}; valid keys: {', '.join(_TOP)}")
        if "tiers" not in config:
            raise StoreError("a configuration mapping needs 'tiers': a list of URLs or of {'url': ...} mappings")
        tiers, namespace = config["tiers"], config.get("namespace")
        chain = {name: config[name] for name in _CHAIN_OPTIONS if name in config}
    else:
        tiers, namespace, chain = config, None, {}
    if isinstance(tiers, str | bytes) or not isinstance(tiers, Sequence) or not tiers:
        raise StoreError("a configuration names its tiers as a non-empty list, top tier first")
    if chain and len(tiers) < 2:
        raise StoreError(f"chain options ({', '.join(sorted(chain))}) need two tiers or more")
    stores: list[BaseStore] = []
    try:
        for number, tier in enumerate(tiers, 1):
            stores.append(_tier(number, tier, namespace))
        if len(stores) == 1:
            return stores[0]
        try:
            return ChainedStore(stores, **chain)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"bad chain option: {exc}") from None
    except BaseException:
        for store in stores:  # what was built so far holds connections
            store.close()
        raise


def _tier(number: int, tier: Any, namespace: str | None) -> BaseStore:
    """Tier *number* (1 = top) of a configuration."""
    if isinstance(tier, str):
        url, options = tier, {}
    elif isinstance(tier, Mapping) and isinstance(tier.get("url"), str):
        url, options = tier["url"], {name: value for name, value in tier.items() if name != "url"}
    else:
        raise StoreError(f"tier {number} is neither a URL nor a mapping with a 'url' string")
    if namespace is not None and "namespace" not in options and not _OWN_NAMESPACE.search(url.partition("?")[2]):
        options["namespace"] = namespace
    try:
        return from_url(url, **options)
    except StoreError as exc:
        exc.add_note(f"(tier {number} of the configuration, top tier first)")
        raise
