"""The backends' names and the other names they answer to, as plain strings.

It imports nothing, so the policy, the options and the magics can name a backend without
loading one; ``factory`` maps each name to its class (a test holds the two to the same names).
"""

from __future__ import annotations

__all__ = ["ALIASES", "AUTO_ORDER", "CONTAINER", "LOCAL", "NAMES", "RAY", "SECCOMP", "canonical"]

LOCAL = "local"
SECCOMP = "seccomp"
RAY = "ray"
CONTAINER = "container"

NAMES = (LOCAL, SECCOMP, RAY, CONTAINER)  # in the order reports list them
ALIASES = {"docker": CONTAINER}  # other names a backend answers to, in options and policy files alike
AUTO_ORDER = (CONTAINER, SECCOMP)  # what ``auto`` tries, strongest isolation first


def canonical(name: str) -> str:
    """The backend's own name for ``name`` (``docker`` -> ``container``); other names unchanged."""
    return ALIASES.get(name, name)
