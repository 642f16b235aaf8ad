"""Redis: key names and Lua scripts (``schema``) and the async operations over them (``store``)."""

from poller.store.schema import Keys, job_member
from poller.store.store import CorruptJobState, Store, connect, is_transient

__all__ = ["CorruptJobState", "Keys", "Store", "connect", "is_transient", "job_member"]
