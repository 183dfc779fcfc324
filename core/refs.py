"""Arguments the driver passes by reference.

A large value (a pair shard, a weight payload, the instruction table) is `ray.put` once by the
driver and handed to an actor wrapped in a list, `[ref]`: Ray resolves a top-level ObjectRef
argument before the call, so the actor could not time or skip the fetch; wrapped, it fetches
the value itself with `fetch`.
"""

from __future__ import annotations

from typing import Any

import ray


def fetch(arg: Any) -> Any:
    """The value of a `[ref]` argument; any other argument as it is."""
    if isinstance(arg, list) and len(arg) == 1 and isinstance(arg[0], ray.ObjectRef):
        return ray.get(arg[0])
    return arg
