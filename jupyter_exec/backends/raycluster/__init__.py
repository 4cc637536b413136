"""Cells as Ray tasks (``%%rayrun``), on an embedded local Ray or a cluster.

``options`` holds ``RayOptions`` (address, resources, node), ``connection`` the one link
to Ray per process, ``probe`` what answers at an address before ``ray.init`` goes near it,
``watch`` the thread that sees the cluster go, ``quiet`` Ray's own log lines kept out of
the cell, ``backend`` the backend, ``run`` one cell's wait and the deadline thread, ``task``
what runs inside the Ray worker (and the relay actor it pushes output to), ``pump`` what
brings that output into the kernel, ``fanout`` a map as batches of tasks, and ``errors`` the
mapping of Ray's exceptions to ours.
"""

from .backend import RayBackend
from .options import RayOptions

__all__ = ["RayBackend", "RayOptions"]
