"""Cells in local processes: ``local`` (rlimits, a cgroup where possible) and ``seccomp``
(the same, confined by Landlock, a seccomp denylist and namespaces).

``backend`` holds the two backends, ``workers`` the pre-started bootstraps each run
takes one of, ``cgroups`` the per-run control groups.
"""

from .backend import LocalBackend, SeccompBackend

__all__ = ["LocalBackend", "SeccompBackend"]
