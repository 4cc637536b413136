"""Each kernel's part at the broker: its sessions' names there, and its lifelines.

A kernel's session ``NAME`` is ``scoped(kernel, NAME)`` in its user's backend at the broker,
so one user's kernels each have their own names.

A kernel that starts a session at the broker first opens a lifeline (``op: lifeline``): one
connection it holds open for as long as it lives, and never writes to again. The broker
answers ``held``, then watches the connection (and sends a ``beat`` now and then, which also
finds a peer that went without a word). When it drops — the kernel exited, was killed, or
lost its machine — the broker ends that kernel's sessions in the user's own backend (their
quota is free again) and cancels its runs still going. A kernel may hold more than one (it
opens another after a broker restart); its sessions end when the last one drops. A lifeline
reaches only its own user's sessions, whatever kernel it names.
"""

from __future__ import annotations

import hashlib

from .service import Broker, Channel, Identity

__all__ = ["end_kernel", "hold", "in_kernels_words", "scoped", "unscoped"]

_WATCH = 0.25  # seconds between looks at a held lifeline
_BEAT = 15.0  # seconds between beats sent down it


def scoped(kernel: str, name: str) -> str:
    """The name at the broker of session ``name`` of ``kernel``: one user's kernels each have theirs."""
    return f"{name[:50]}-{hashlib.sha256(kernel.encode()).hexdigest()[:12]}"


def unscoped(kernel: str, name: str) -> str | None:
    """The kernel's own name of its session ``name`` at the broker; None for another kernel's."""
    suffix = f"-{hashlib.sha256(kernel.encode()).hexdigest()[:12]}"
    return name[: -len(suffix)] if name.endswith(suffix) else None


def in_kernels_words(text: str, kernel: str, name: str | None) -> str:
    """``text`` (a refusal, an error, a note to the user) with session ``name``'s name at the broker
    put back as its kernel calls it."""
    return text.replace(f"session {scoped(kernel, name)}", f"session {name}") if name else text


def hold(broker: Broker, identity: Identity, kernel: str, channel: Channel) -> None:
    """Serve one lifeline of ``kernel`` until it drops (then end the kernel's sessions, if it was
    the last) or the broker stops."""
    broker.lifelines.take(identity.user, kernel)
    try:
        channel.send({"t": "reply", "held": True})
        beats = 0
        while not channel.gone() and not broker.closing.wait(_WATCH):
            beats += 1
            if beats * _WATCH >= _BEAT:
                beats = 0
                channel.send({"t": "beat"})
    except OSError:
        pass  # it dropped while we wrote to it
    finally:
        last = broker.lifelines.drop(identity.user, kernel)
    if last and not broker.closing.is_set():
        ended = end_kernel(broker, identity.user, kernel, "its kernel went (its lifeline to the broker dropped)")
        broker.audit.write(op="lifeline", user=identity.user, decision="dropped", reason=f"ended {ended}")


def end_kernel(broker: Broker, user: str, kernel: str, why: str) -> str:
    """End ``user``'s sessions of ``kernel`` and cancel its runs going; what was ended, in words.
    The runs are told first: a session being made is made under its backend's lock, which the
    listing of sessions waits for, and its run's cancel stops the making."""
    with broker.live_lock:
        runs = [live for live in broker.live.values() if (live.user, live.kernel) == (user, kernel)]
    for live in runs:
        live.cancel.set()
    backend = broker.sandboxes.existing(user)
    names = [i["name"] for i in backend.list_sessions()] if backend is not None else []
    sessions = [n for n in names if unscoped(kernel, n) is not None and backend and backend.sessions.end(n, why)]
    for live in runs:
        if live.stop is not None:
            live.stop()
    return f"{len(sessions)} session(s), {len(runs)} run(s)"
