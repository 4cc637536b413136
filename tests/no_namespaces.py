"""Run a command where no namespace can be made: ``python no_namespaces.py CMD ...``.

Loads a seccomp filter that refuses ``unshare``, ``setns`` and namespace-creating
``clone`` (EPERM), as Docker's and Kubernetes' default profiles do, then execs CMD. The
tests start a kernel under it (``JX_TEST_NO_NAMESPACES=1``) to exercise the sandbox's
no-namespace mode for real. The filter is the sandbox's own denylist with the network
allowed: the kernel itself needs no call it refuses.
"""

from __future__ import annotations

import os
import sys

from jupyter_exec.runner.confine import apply_seccomp

if __name__ == "__main__":
    apply_seccomp(network=True)
    os.execvp(sys.argv[1], sys.argv[1:])
