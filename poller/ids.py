"""Job and project identifiers: the one grammar every entry point checks."""

from __future__ import annotations

import re
from typing import Final

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def is_valid_id(value: object) -> bool:
    """True when ``value`` is a string matching ``^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$``.

    The grammar keeps IDs safe to embed in URL paths and Redis key names: no ``/``, ``?``,
    ``%``, ``:``, spaces or control characters, and never ``.`` or ``..`` alone.
    """
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None
