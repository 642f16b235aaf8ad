"""Redis: key names and Lua scripts (``schema``) and the async operations over them (``store``)."""

from poller.store.schema import Keys, job_member
from poller.store.store import Store, connect

__all__ = ["Keys", "Store", "connect", "job_member"]
