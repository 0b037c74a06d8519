"""Every call of a store port timed, whichever backend serves it (``ooda_store_seconds`` in ``bot/metrics.py``).

The operations are the coroutine methods of the ``Store`` Protocol: a fixed set named by the
code, never anything taken from the data a call carries, so the metric's series stay bounded.
Each is replaced on the store instance by a wrapper that measures it, so the backends stay
unaware of metrics and the store keeps its type and its other attributes. A unit of work counts
as one ``transact``; ``audit_rows``, a stream read at the reader's pace, is not timed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from time import perf_counter
from typing import Any

from bot.store.protocol import Store

Observe = Callable[[float], None]

OPERATIONS = tuple(sorted(name for name, member in inspect.getmembers(Store)
                          if not name.startswith("_") and inspect.iscoroutinefunction(member)))


def time_store_calls(store: Store, observer: Callable[[str], Observe]) -> None:
    """Time each port call of ``store`` from now on.

    Args:
        store: a store, opened or not.
        observer: given an operation name, what to call with the seconds each call of it took
            (raised or cancelled calls included: they held their caller as long).
    """
    for name in OPERATIONS:
        setattr(store, name, _timed(getattr(store, name), observer(name)))


def _timed(method: Callable[..., Coroutine[Any, Any, Any]], observe: Observe) -> Callable[..., Any]:
    @functools.wraps(method)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        start = perf_counter()
        try:
            return await method(*args, **kwargs)
        finally:
            observe(perf_counter() - start)

    return timed
