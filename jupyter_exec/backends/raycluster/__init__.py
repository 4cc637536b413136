"""Cells as Ray tasks (``%%rayrun``), on an embedded local Ray or a cluster.

``options`` holds ``RayOptions`` (address, resources, node), ``connection`` the one link
to Ray per process, ``probe`` what answers at an address before ``ray.init`` goes near it,
``watch`` the thread that sees the cluster go, ``quiet`` Ray's own log lines kept out of
the cell, ``backend`` the backend, ``run`` one cell's wait and the deadline thread, ``task``
what runs inside the Ray worker, ``output`` the live-output relay and ``errors`` the
mapping of Ray's exceptions to ours.
"""

from .backend import RayBackend
from .options import RayOptions

__all__ = ["RayBackend", "RayOptions"]
