"""What a terminal wants: whether to colour a stream, by the conventions people expect."""

from __future__ import annotations

import os
from collections.abc import Mapping


def use_colour(stream: object, env: Mapping[str, str] | None = None) -> bool:
    """Whether to colour what goes to ``stream``: on a terminal, unless told otherwise.

    ``NO_COLOR`` (any non-empty value, https://no-color.org) turns colour off and wins;
    ``FORCE_COLOR`` (any non-empty value) turns it on even when ``stream`` is not a terminal;
    ``TERM=dumb`` turns it off.  ``env`` defaults to the process environment.
    """
    env = os.environ if env is None else env
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    if env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed or detached stream
        return False
