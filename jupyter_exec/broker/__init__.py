"""The broker: one service that alone holds the container engine and runs container cells for
the users of a shared machine, under the administrator's policy (docs/broker.md).

The kernel's side (``BrokerBackend``, the wire format and the transport) lives with the
backends, in ``jupyter_exec.backends.broker``. Here is the broker's side, at the top with the
CLI: ``service`` (the ``Broker``: what it holds, start, stop), ``ops`` (each request answered,
for one identity), ``runs`` (one run: admit, queue, start, stream, finish), ``sandboxes`` (each
user's container backend), ``rules`` (the policy file with its user and group sections and
quotas), ``quotas`` (fair queue, rate limit), ``audit``, ``records`` (``BrokerRecords``),
``unix`` and ``hub`` (the two servers), ``hubauth`` (tokens checked against the hub) and ``cli``.

This module imports nothing, so the kernel side loads without the broker side.
"""
