"""Bearer tokens from a file, re-read when it changes, compared in constant time."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field

from poller.telemetry import REDACTOR, get_logger

log = get_logger(component="web")


def parse_tokens(text: str) -> list[str]:
    """One token per line; blank lines and ``#`` comments are ignored."""
    tokens = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            tokens.append(line)
    return tokens


@dataclass
class TokenFile:
    """The tokens of ``path``, reloaded whenever its inode, size or mtime changes (checked
    on every :meth:`tokens` call: one ``stat``)."""

    path: str
    _stamp: tuple[int, int, int] | None = None
    _tokens: list[bytes] = field(default_factory=list)

    def tokens(self) -> list[bytes]:
        if not self.path:
            return []
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._stamp is not None or not self._tokens:
                log.warning("web_tokens_unreadable", path=self.path, error=exc.strerror)
            self._stamp, self._tokens = None, []
            return []
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            try:
                with open(self.path, encoding="utf-8") as fh:
                    found = parse_tokens(fh.read())
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("web_tokens_unreadable", path=self.path, error=str(exc)[:200])
                found = []
            for token in found:
                REDACTOR.add(token)
            self._tokens = [t.encode("utf-8") for t in found]
            self._stamp = stamp
            log.info("web_tokens_loaded", path=self.path, count=len(found))
        return self._tokens

    def accepts(self, presented: str | None) -> bool:
        """Whether ``presented`` is one of the tokens (every one compared, in constant time)."""
        if not presented:
            return False
        given = presented.encode("utf-8", "replace")
        ok = False
        for token in self.tokens():
            ok |= hmac.compare_digest(given, token)
        return ok


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if that is what it is."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
