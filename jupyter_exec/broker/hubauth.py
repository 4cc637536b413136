"""Who a hub token belongs to, asked of the hub itself (the broker as a JupyterHub service).

A kernel sends its single-user server's ``JUPYTERHUB_API_TOKEN`` with every request; the
broker asks the hub's API (``GET {api_url}/user`` with that token) whose it is, and trusts
nothing else the request says about who sent it. Answers are kept for ``ttl`` seconds (by
the token's hash, never the token), so a cell's requests do not each cost a hub round trip;
a token the hub refuses is refused (403), and a hub that does not answer refuses too (503).
Only users' tokens are served: a service's or an unknown kind of token is refused.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request

from jupyter_exec.backends.broker.wire import BrokerError

from .service import Identity

__all__ = ["HubAuth"]


class HubAuth:
    """Checks tokens against the hub at ``api_url`` (e.g. ``http://127.0.0.1:8081/hub/api``)."""

    def __init__(self, api_url: str, ttl: float = 60.0) -> None:
        self.api_url, self.ttl = api_url.rstrip("/"), ttl
        self._known: dict[str, tuple[float, Identity]] = {}
        self._lock = threading.Lock()

    def identity(self, token: str) -> Identity:
        if not token:
            raise BrokerError(401, "no token: send your server's JUPYTERHUB_API_TOKEN (Authorization: token ...)")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            known = self._known.get(key)
        if known and now - known[0] < self.ttl:
            return known[1]
        found = self._ask(token)
        with self._lock:
            self._known[key] = (now, found)
        return found

    def _ask(self, token: str) -> Identity:
        request = urllib.request.Request(f"{self.api_url}/user", headers={"Authorization": f"token {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                model = json.load(answer)
        except urllib.error.HTTPError as error:
            if error.code in (401, 403, 404):
                raise BrokerError(403, "the hub does not know this token (expired, or revoked)") from None
            raise BrokerError(503, f"the hub's API answered {error.code}; try again") from None
        except (OSError, ValueError) as error:
            raise BrokerError(503, f"the hub's API at {self.api_url} does not answer ({error})") from None
        if model.get("kind", "user") != "user" or not isinstance(model.get("name"), str):
            raise BrokerError(403, "only users' tokens are served (this one is a service's)")
        groups = tuple(sorted(str(g) for g in model.get("groups") or ()))
        return Identity(model["name"], groups, bool(model.get("admin")), "hub")
