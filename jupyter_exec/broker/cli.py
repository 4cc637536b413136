"""``jupyter-exec broker``: serve (the default), or an administrator's ``runs`` and ``cancel``.

::

    jupyter-exec broker --socket /run/jupyter-exec/broker.sock --policy /etc/jupyter-exec/broker.yaml \\
        --data-dir /var/lib/jupyter-exec-broker --audit /var/log/jupyter-exec/audit.jsonl
    jupyter-exec broker --hub --policy FILE --data-dir DIR    # as a JupyterHub service
    jupyter-exec broker runs [--user U] [--all] [--socket PATH]
    jupyter-exec broker cancel N [--socket PATH]

The admin commands are requests like any other, from root (or ``--admin-group``) over the
socket: the broker answers them with everyone's runs. SIGTERM and SIGINT stop the broker (its
runs end ``cancelled``, their containers removed); SIGHUP reads the policy file again.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from jupyter_exec.backends.broker.transport import Address, ask
from jupyter_exec.errors import JupyterExecError

__all__ = ["add_parser", "run"]

DEFAULT_SOCKET = "/run/jupyter-exec/broker.sock"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    broker = commands.add_parser(
        "broker", help="run container cells for the users of a shared machine (docs/broker.md)"
    )
    broker.add_argument("action", nargs="?", default="serve", choices=("serve", "runs", "cancel"))
    broker.add_argument("run", nargs="?", type=int, help="the run to cancel")
    broker.add_argument(
        "--socket",
        help=f"the Unix socket (default {DEFAULT_SOCKET}); with --hub, one more way in, for the admin commands",
    )
    broker.add_argument(
        "--hub",
        action="store_true",
        help="serve HTTP as a JupyterHub service ($JUPYTERHUB_SERVICE_URL; tokens checked at $JUPYTERHUB_API_URL)",
    )
    broker.add_argument("--policy", type=Path, metavar="FILE", help="the broker's policy file (docs/broker.md)")
    broker.add_argument("--data-dir", type=Path, metavar="DIR", help="records, logs and envs (serve)")
    broker.add_argument("--audit", type=Path, metavar="FILE", help="the audit log (default DATA_DIR/audit.jsonl)")
    broker.add_argument("--admin-group", metavar="GROUP", help="members of GROUP may list and cancel anyone's runs")
    broker.add_argument("--user", help="runs: only this user's")
    broker.add_argument("--all", action="store_true", help="runs: finished ones too")


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "serve":
            return _serve(args)
        address = Address.parse(f"unix://{Path(args.socket or DEFAULT_SOCKET).resolve()}")
        if args.action == "cancel":
            if args.run is None:
                raise JupyterExecError("cancel: which run? e.g. jupyter-exec broker cancel 12")
            reply = ask(address, {"op": "cancel", "run": args.run})
            print(f"run {args.run}: {'cancelled' if reply['cancelled'] else 'not running'} ({reply['status']})")
            return 0
        rows = ask(address, {"op": "runs", "user": args.user, "finished": args.all})["runs"]
        for row in rows:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created"]))
            print(f"{row['id']:>6}  {row['user']:12} {row['status']:10} {started}  {row['name'] or ''}")
        return 0
    except JupyterExecError as error:
        print(f"jupyter-exec broker: {error}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    from .hub import HubServer
    from .hubauth import HubAuth
    from .service import Broker, Settings
    from .unix import UnixServer

    if args.data_dir is None:
        raise JupyterExecError("serve: --data-dir DIR is required (the broker's records, logs and envs)")
    policy = args.policy.resolve() if args.policy else None
    broker = Broker(Settings(data_dir=args.data_dir.resolve(), policy=policy, audit=args.audit))
    servers: list[HubServer | UnixServer] = []
    if args.hub:
        url, api = os.environ.get("JUPYTERHUB_SERVICE_URL", ""), os.environ.get("JUPYTERHUB_API_URL", "")
        if not url or not api:
            broker.close()
            raise JupyterExecError("--hub: start it from the hub (c.JupyterHub.services, docs/broker.md)")
        servers.append(HubServer(broker, url, HubAuth(api)))
    if args.socket or not args.hub:
        servers.append(UnixServer(broker, Path(args.socket or DEFAULT_SOCKET), args.admin_group))
    where = ", ".join(
        f"unix://{s.path}" if isinstance(s, UnixServer) else f"{s.url} (a JupyterHub service)" for s in servers
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        for server in servers:
            server.close()

    def reload(signum: int, frame: FrameType | None) -> None:
        print(broker.reload(), file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    print(f"jupyter-exec broker: serving on {where}, policy {broker.rules.source}", file=sys.stderr, flush=True)
    for other in servers[1:]:
        threading.Thread(target=other.serve_forever, daemon=True, name="jx-broker-admin").start()
    try:
        servers[0].serve_forever()
    finally:
        broker.close()
    return 0
