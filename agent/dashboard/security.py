"""Who may read and write: loopback, the token, signed session cookies and CSRF tokens.

- Reads need nothing on a loopback address; on any other address they need the
  token (a session cookie from the login form, or ``Authorization: Bearer``).
- Writes (acknowledge, label) always need the token. Without a configured token the
  dashboard is read-only.
- A browser proves the token once (login form) and gets a session cookie: HMAC-signed
  with a key made at start (a restart logs everybody out), HttpOnly, SameSite=Strict.
- Every form carries a CSRF token: an HMAC of the session (or, before login, of a
  random per-browser cookie) that another site cannot read or forge; form posts with
  an ``Origin`` header must come from this very host as well.
- The API takes the token in ``Authorization: Bearer``: a header another site's page
  cannot make a browser send, so API writes need no CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field
from typing import Final

SESSION_COOKIE: Final = "ew_session"
CSRF_COOKIE: Final = "ew_csrf"
#: A login lasts this long.
SESSION_S: Final = 12 * 3600


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _digest(key: bytes, *parts: str) -> str:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part.encode())
        mac.update(b"\x00")
    return mac.hexdigest()


@dataclass
class Guard:
    """The rules above for one server: its token (None: read-only) and its bind host."""

    token: str | None
    loopback: bool
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def writable(self) -> bool:
        return self.token is not None

    @property
    def reads_need_login(self) -> bool:
        return not self.loopback

    def token_ok(self, given: str | None) -> bool:
        if self.token is None or not given:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def bearer_ok(self, header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    # -- sessions ---------------------------------------------------------------------

    def new_session(self, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + SESSION_S)
        nonce = secrets.token_hex(8)
        return f"{expires}.{nonce}.{_digest(self.key, 'session', str(expires), nonce)}"

    def session_ok(self, cookie: str | None, now: float | None = None) -> bool:
        if not cookie or self.token is None:
            return False
        expires, _, rest = cookie.partition(".")
        nonce, _, mac = rest.partition(".")
        if not expires.isdigit() or not nonce or not mac:
            return False
        good = _digest(self.key, "session", expires, nonce)
        if not hmac.compare_digest(mac, good):
            return False
        return int(expires) > (now if now is not None else time.time())

    # -- CSRF -------------------------------------------------------------------------

    @staticmethod
    def new_browser_id() -> str:
        return secrets.token_hex(16)

    def csrf_token(self, browser_id: str) -> str:
        return _digest(self.key, "csrf", browser_id)

    def csrf_ok(self, browser_id: str | None, given: str | None) -> bool:
        if not browser_id or not given:
            return False
        return hmac.compare_digest(given, self.csrf_token(browser_id))
