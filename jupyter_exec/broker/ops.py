"""The broker's answer to each request, whichever server took it, for one identity.

The Unix-socket server (``unix``) knows a caller by its uid, the HTTP server (``hub``) by
the hub token it checked; both hand ``handle`` the ``Broker``, an ``Identity``, the request
document and a ``Channel`` to answer on. Runs are ``runs.serve_run``'s; the rest is here:
``hello`` (who you are to the broker, your policy and quotas), ``runs``, ``show`` and
``logs`` (your runs; everyone's for an administrator), ``cancel``, ``identity``,
``resources``, ``sessions`` / ``end`` (a kernel's sandbox sessions, which live in the
user's own container backend: no user sees or ends another's), and ``lifeline`` (a kernel's
hold on its sessions: ``kernels.hold``). A user asking about a run of
another user is told there is no such run of theirs (404), the same answer as for a run that
does not exist, and that run goes on. Every request is counted against its user's rate and
written to the audit log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jupyter_exec.admission import BackendFacts, admit
from jupyter_exec.backends.broker import wire
from jupyter_exec.backends.broker.wire import BrokerError
from jupyter_exec.backends.container import ContainerOptions
from jupyter_exec.envs.envspec import EnvSpec
from jupyter_exec.errors import JupyterExecError
from jupyter_exec.policy import policy_report
from jupyter_exec.spec import Limits, RunSpec
from jupyter_exec.store.records import RunRow

from .kernels import hold, scoped, unscoped
from .runs import serve_run
from .service import Broker, Channel, Identity

__all__ = ["handle"]


def handle(broker: Broker, identity: Identity, doc: dict[str, Any], channel: Channel) -> None:
    """Answer one request on ``channel``; errors become an error event (the broker goes on)."""
    op = "?"
    try:
        op = wire.parse_request(doc)
        broker.limiter.take(identity.user, broker.rules.for_user(identity.user, identity.groups)[1].rate)
        if op == "run":
            serve_run(broker, identity, doc, channel)
            return
        if op == "lifeline":
            broker.audit.write(op=op, user=identity.user, decision="allowed")
            hold(broker, identity, str(doc.get("kernel") or ""), channel)
            return
        reply = _OPS[op](broker, identity, doc)
        broker.audit.write(op=op, user=identity.user, decision="allowed", run=doc.get("run"))
        channel.send({"t": "reply", **reply})
    except (BrokerError, JupyterExecError) as error:
        broker.audit.write(op=op, user=identity.user, decision="refused", reason=str(error), run=doc.get("run"))
        try:
            channel.send(wire.error_event(error))
        except OSError:
            pass


def _owned(broker: Broker, identity: Identity, doc: dict[str, Any]) -> RunRow:
    """The run ``doc`` names, if it is the caller's (or the caller is an administrator); else 404."""
    run_id = doc.get("run")
    row = broker.records.get(run_id) if isinstance(run_id, int) and not isinstance(run_id, bool) else None
    if row is None or not (identity.admin or row["user"] == identity.user):
        raise BrokerError(404, f"no run {run_id!r} of yours; `runs` lists them")
    return row


def _hello(broker: Broker, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
    policy, quotas = broker.rules.for_user(identity.user, identity.groups)
    return {
        "user": identity.user,
        "groups": list(identity.groups),
        "admin": identity.admin,
        "version": wire.VERSION,
        "image": broker.sandboxes.image(),
        "policy": policy_report(policy),
        "quotas": quotas.__dict__,
    }


def _runs(broker: Broker, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
    user = doc.get("user") or None
    if not identity.admin and user not in (None, identity.user):
        raise BrokerError(403, "only an administrator lists other users' runs")
    limit = _whole(doc.get("limit"), 50)
    who = user if identity.admin else identity.user
    return {"runs": broker.records.listing(who, finished=bool(doc.get("finished")), limit=max(1, min(limit, 1000)))}


def _show(broker: Broker, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
    return {"run": _owned(broker, identity, doc)}


def _logs(broker: Broker, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
    row = _owned(broker, identity, doc)
    offset = max(0, _whole(doc.get("offset"), 0))
    path = broker.logs_dir / f"{row['id']}.log"
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            data = log.read(1 << 20)
    except FileNotFoundError:
        data = b""
    return {"text": data.decode(errors="replace"), "next_offset": offset + len(data)}


def _cancel(broker: Broker, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
    row = _owned(broker, identity, doc)
    with broker.live_lock:
        live = broker.live.get(row["id"])
    if live is None:
        return {"cancelled": False, "status": row["status"]}
    live.cancel.set()
    if live.stop is not None:
        live.stop()
    return {"cancelled": True, "status": row["status"]}


def _identity(broker: Broker, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
    """What decides a run's result here besides its code and spec, for the kernel's cache of
    identical runs (``--cache``): the image's digest (asked afresh), the runtime the policy
    leaves the run, the engine; as a local container backend answers it."""
    policy = broker.rules.for_user(identity.user, identity.groups)[0]
    image, runtime = (doc.get(k) if isinstance(doc.get(k), str) else None for k in ("image", "runtime"))
    spec = RunSpec(
        backend="container",
        placement=ContainerOptions.parse(runtime),
        runtime_env=EnvSpec(image=image) if image else None,
    )
    with broker.sandboxes.backend(identity.user, policy) as backend:
        return {"identity": backend.identity(admit(spec, BackendFacts.of(backend), policy, Limits()))}


def _resources(broker: Broker, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
    quotas = broker.rules.for_user(identity.user, identity.groups)[1]
    return {
        "quotas": quotas.__dict__,
        "usage": broker.scheduler.usage(identity.user),
        "capacity": broker.rules.capacity.__dict__,
        "idle_containers": broker.sandboxes.idle_containers(identity.user),
    }


def _sessions(broker: Broker, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
    """The sessions of the caller's kernel ``doc['kernel']``, by the kernel's own names."""
    kernel = str(doc.get("kernel") or "")
    backend = broker.sandboxes.existing(identity.user)
    listed = []
    for info in backend.list_sessions() if backend is not None else []:
        own = unscoped(kernel, info["name"])
        if own is not None:
            listed.append({**info, "name": own, "backend": "broker"})
    return {"sessions": listed}


def _end(broker: Broker, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
    """End session ``doc['session']`` of the caller's kernel (all of that kernel's, with None)."""
    kernel, name = str(doc.get("kernel") or ""), wire.session_name(doc)
    backend = broker.sandboxes.existing(identity.user)
    if backend is None:
        return {"ended": False}
    names = [scoped(kernel, name)] if name else [i["name"] for i in backend.list_sessions()]
    ended = [backend.end_session(n) for n in names if unscoped(kernel, n) is not None]
    return {"ended": any(ended)}


def _whole(value: Any, default: int) -> int:
    """A request's whole number (a bool is not one), else ``default``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


_OPS: dict[str, Callable[[Broker, Identity, dict[str, Any]], dict[str, Any]]] = {
    "hello": _hello,
    "runs": _runs,
    "show": _show,
    "logs": _logs,
    "cancel": _cancel,
    "identity": _identity,
    "resources": _resources,
    "sessions": _sessions,
    "end": _end,
}
