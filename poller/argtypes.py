"""argparse value types shared by the commands: one wording for one kind of mistake."""

from __future__ import annotations

import argparse
import math


def positive_seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def whole_number(text: str, minimum: int = 0) -> int:
    """A whole number, at least ``minimum``."""
    if not text.strip().isdigit() or int(text) < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
    return int(text)


def count(text: str) -> int:
    """A whole number, zero or more (an index, a number of entries)."""
    return whole_number(text, 0)


def at_least_one(text: str) -> int:
    """A whole number, one or more (attempts, concurrency)."""
    return whole_number(text, 1)
