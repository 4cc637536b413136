"""The kernel's side of a broker (docs/broker.md): the container backend of a kernel whose
container cells run at a broker, which alone holds the container engine.

``client`` is that backend (``BrokerBackend``; ``factory`` gives it for ``container`` when
``ExecConfig.broker`` is set), ``wire`` the request and event documents it shares with the
broker (``jupyter_exec.broker``, the service side, imports them from here), and ``transport``
how it reaches the broker: a Unix socket, or HTTP through the hub.

This module imports nothing, so the admin CLI reads the wire format without loading a backend.
"""
