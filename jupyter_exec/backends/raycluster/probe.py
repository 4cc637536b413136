"""Asking a Ray address what is there, within a deadline, before ``ray.init`` is let near it.

``ray.init`` against an address where no cluster answers retries for many minutes while its
C++ client prints "Failed to connect to GCS ..." into the cell. One gRPC call of our own to
the cluster's GCS (the port ``ray start --head`` prints) answers every common mistake in
milliseconds, or at the deadline: a name that does not resolve, nothing listening, something
that is not a GCS (the dashboard, the Ray Client port), a cluster that wants a token, or one
running another Ray or Python. The same call, repeated, is how ``watch`` sees a cluster go.

Each failure is a ``BackendUnavailableError`` of one line: the address, what was found, the fix.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from jupyter_exec.errors import BackendUnavailableError

__all__ = ["Found", "Gcs", "GcsGone", "probe", "split_address"]

_CLIENT_SCHEME = "ray://"
_DROP_FIX = "or drop --address for a local Ray"


@dataclass(frozen=True)
class Found:
    """What answered at the address: the GCS to watch (None for a Ray Client address) and its cluster id."""

    gcs: str | None
    cluster_id: bytes = b""


class GcsGone(Exception):
    """The GCS did not answer as the cluster we know; ``refused`` if nothing listens there at all."""

    def __init__(self, what: str, refused: bool) -> None:
        super().__init__(what)
        self.refused = refused


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[IPv6]:PORT``) as host and port; a ``SpecError``-like refusal otherwise."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BackendUnavailableError(
            "ray",
            f"cannot connect to Ray at {address}: the address needs a host and a port",
            "write it as HOST:PORT with the GCS port `ray start --head` printed (default 6379), "
            f"ray://HOST:10001 for the Ray Client, or auto; {_DROP_FIX}",
        )
    return host, int(port)


def probe(address: str, timeout: float) -> Found:
    """What is at ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``), or the one-line
    ``BackendUnavailableError`` saying what was found instead; never longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    if address.startswith(_CLIENT_SCHEME):
        _reach_client(address, deadline, timeout)
        return Found(None)
    target = _resolve_auto(timeout) if address == "auto" else address
    _resolve(split_address(target)[0], address, deadline, timeout)
    gcs = Gcs(target, auto=address == "auto")
    try:
        metadata = json.loads(gcs.ask("metadata", deadline - time.monotonic()) or b"{}")
        cluster_id = gcs.ask("cluster_id", deadline - time.monotonic())
    except gcs.rpc_error as error:
        raise _refusal(address, error, timeout, sent_token=gcs.sends_token) from None
    finally:
        gcs.close()
    _check_versions(address, metadata)
    return Found(target, cluster_id)


class Gcs:
    """One gRPC channel to a cluster's GCS, sending Ray's token when Ray itself would."""

    def __init__(self, target: str, *, auto: bool = False) -> None:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

        self._pb: Any = gcs_service_pb2  # generated: its message classes are not in Ray's stubs
        self.rpc_error = grpc.RpcError
        # No reconnect backoff to speak of: a head that comes back is seen at the next look.
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]
        )
        self._kv = gcs_service_pb2_grpc.InternalKVGcsServiceStub(self._channel)
        self._nodes = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(self._channel)
        self._metadata = _token_metadata(auto)
        self.sends_token = bool(self._metadata)

    def ask(self, what: str, seconds: float) -> bytes:
        """``metadata`` (the cluster's versions, as JSON) or ``cluster_id``; ``rpc_error`` if unanswered."""
        seconds = max(seconds, 0.05)
        if what == "metadata":
            request = self._pb.InternalKVGetRequest(key=b"CLUSTER_METADATA", namespace=b"cluster")
            return bytes(self._kv.InternalKVGet(request, timeout=seconds, metadata=self._metadata).value)
        request = self._pb.GetClusterIdRequest()
        return bytes(self._nodes.GetClusterId(request, timeout=seconds, metadata=self._metadata).cluster_id)

    def cluster_id(self, seconds: float) -> bytes:
        """The cluster id the GCS answers with now; ``GcsGone`` if it cannot answer."""
        try:
            return self.ask("cluster_id", seconds)
        except self.rpc_error as error:
            details = error.details() or ""
            raise GcsGone(f"{error.code().name}: {details}", "refused" in details.lower()) from None

    def close(self) -> None:
        self._channel.close()


def _token_metadata(auto: bool) -> tuple[tuple[str, str], ...]:
    """Ray's token as gRPC metadata, when ``ray.init`` would send it: ``RAY_AUTH_MODE=token``, or
    (for ``auto``, a cluster on this machine) a token on file and no mode set."""
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]  # not in Ray's stubs

    loader = AuthenticationTokenLoader.instance()
    if auto and os.environ.get("RAY_AUTH_MODE") is None and loader.has_token(ignore_auth_mode=True):
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)  # as ray.init("auto") will
    if not loader.has_token():
        return ()
    return tuple(loader.get_token_for_http_header().items())


def _refusal(address: str, error: Any, timeout: float, *, sent_token: bool) -> BackendUnavailableError:
    """The one line for a GCS call that failed: what was found at ``address``, and the fix."""
    code, details = error.code().name, (error.details() or "").strip()
    lowered = details.lower()
    check = "check the address (`ray status` on the head node prints it)"
    if code == "UNAUTHENTICATED":
        found = (
            "the cluster refused this kernel's token"
            if sent_token
            else "the cluster uses token authentication and this kernel sent no token"
        )
        fix = (
            "give the kernel the cluster's token (RAY_AUTH_TOKEN, or the file RAY_AUTH_TOKEN_PATH names)"
            if sent_token
            else "set RAY_AUTH_MODE=token (and the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token) "
            "in the kernel's environment and restart it"
        )
    elif code == "DEADLINE_EXCEEDED":
        found, fix = (
            f"no answer within {timeout:g} s (a host that is down or firewalled, or a head too busy to answer)",
            f"{check}; raise ExecConfig.ray_connect_timeout if the cluster is just slow",
        )
    elif "refused" in lowered:
        found, fix = "nothing listens there (connection refused)", f"start the cluster (`ray start --head`) or {check}"
    elif code == "UNIMPLEMENTED" or "http/2" in lowered or "handshake" in lowered or "socket closed" in lowered:
        found, fix = (
            "something answers there, but not a Ray cluster's GCS",
            "give the GCS port `ray start --head` printed (default 6379); the Ray Client port needs "
            "ray://HOST:10001, and the dashboard (8265) is no Ray address",
        )
    elif "dns" in lowered or "resolve" in lowered:
        found, fix = "its host name does not resolve", check
    else:
        found, fix = f"the GCS did not answer ({code}: {details})", check
    return BackendUnavailableError("ray", f"cannot connect to Ray at {address}: {found}", f"{fix}, {_DROP_FIX}")


def _check_versions(address: str, metadata: dict[str, Any]) -> None:
    """Ray's own version rule (same Ray, same Python), as one line."""
    import ray
    from ray._private.utils import check_version_info

    if not metadata:
        return
    try:
        check_version_info(metadata, "this kernel", raise_on_mismatch=True)
    except Exception:  # Ray's own paragraph: ours names both sides in one line
        theirs = f"Ray {metadata.get('ray_version')} on Python {metadata.get('python_version')}"
        ours = f"Ray {ray.__version__} on Python {'.'.join(map(str, sys.version_info[:3]))}"
        raise BackendUnavailableError(
            "ray",
            f"cannot connect to Ray at {address}: the cluster runs {theirs}, this kernel has {ours}",
            f"install the cluster's versions in the kernel's environment (pip install ray=="
            f"{metadata.get('ray_version')}), {_DROP_FIX}",
        ) from None


def _resolve_auto(timeout: float) -> str:
    """The cluster ``auto`` means: RAY_ADDRESS, else the last ``ray start`` on this machine."""
    from ray._private.services import canonicalize_bootstrap_address

    found = canonicalize_bootstrap_address("auto")
    if found is None:
        raise BackendUnavailableError(
            "ray",
            "cannot connect to Ray at auto: no cluster found (RAY_ADDRESS is unset and no `ray start` ran here)",
            f"start one with `ray start --head`, or give its address as HOST:PORT, {_DROP_FIX}",
        )
    return found


def _resolve(host: str, address: str, deadline: float, timeout: float) -> None:
    """The host name resolves before the deadline (a stuck DNS lookup is left behind, not waited for)."""
    answer: list[BaseException | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            answer.append(None)
        except OSError as error:
            answer.append(error)

    thread = threading.Thread(target=lookup, daemon=True, name="jx-ray-dns")
    thread.start()
    thread.join(max(deadline - time.monotonic(), 0.05))
    if not answer:
        found = f"the DNS lookup of {host} gave no answer within {timeout:g} s"
    elif answer[0] is not None:
        found = f"the host name {host} does not resolve ({getattr(answer[0], 'strerror', None) or answer[0]})"
    else:
        return
    raise BackendUnavailableError(
        "ray", f"cannot connect to Ray at {address}: {found}", f"check the host name, {_DROP_FIX}"
    )


def _reach_client(address: str, deadline: float, timeout: float) -> None:
    """A Ray Client address (``ray://HOST:PORT``): its name resolves and its port speaks gRPC."""
    import grpc

    target = address[len(_CLIENT_SCHEME) :]
    host, _ = split_address(target)
    _resolve(host, address, deadline, timeout)
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=max(deadline - time.monotonic(), 0.05))
    except grpc.FutureTimeoutError:
        raise BackendUnavailableError(
            "ray",
            f"cannot connect to Ray at {address}: no Ray Client server answered within {timeout:g} s",
            f"check the address and that the head runs the Ray Client server (port 10001), {_DROP_FIX}",
        ) from None
    finally:
        channel.close()
