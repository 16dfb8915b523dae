"""Who may see the control room: a bearer token, basic auth, or (when neither is set) anyone.

The page, the JSON API and the event stream are guarded; ``/healthz``, ``/metrics`` and the page's
static code are not (probes, Prometheus scrapers and script tags; none carries a position or a
unit id). ``EventSource``
cannot send headers, so the token is also accepted as the ``token`` query parameter.
"""

from __future__ import annotations

import base64
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Access:
    token: str | None = None
    user: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls) -> Access:
        return cls(
            token=os.environ.get("HOTSPOT_WEB_TOKEN") or None,
            user=os.environ.get("HOTSPOT_WEB_USER") or None,
            password=os.environ.get("HOTSPOT_WEB_PASSWORD") or None,
        )

    @property
    def required(self) -> bool:
        return self.token is not None or self.user is not None

    def _basic(self) -> str | None:
        if self.user is None:
            return None
        pair = f"{self.user}:{self.password or ''}".encode()
        return base64.b64encode(pair).decode("ascii")

    def allows(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """Whether a request with these headers and query parameters may see the control room."""
        if not self.required:
            return True
        scheme, _, credentials = headers.get("Authorization", "").partition(" ")
        scheme = scheme.lower()
        if self.token is not None:
            if scheme == "bearer" and hmac.compare_digest(credentials.strip(), self.token):
                return True
            if hmac.compare_digest(query.get("token", ""), self.token):
                return True
        basic = self._basic()
        return (
            basic is not None
            and scheme == "basic"
            and hmac.compare_digest(credentials.strip(), basic)
        )

    def challenge(self) -> dict[str, str]:
        """The ``WWW-Authenticate`` header of a 401 (basic first, so a browser asks for it)."""
        scheme = 'Basic realm="hotspot"' if self.user is not None else 'Bearer realm="hotspot"'
        return {"WWW-Authenticate": scheme}

    def peer_headers(self) -> dict[str, str]:
        """Credentials a worker sends when it asks another worker for its part of the view."""
        if self.token is not None:
            return {"Authorization": f"Bearer {self.token}"}
        basic = self._basic()
        return {} if basic is None else {"Authorization": f"Basic {basic}"}
