"""The broker: one service that alone holds the container engine and runs container cells for
the users of a shared machine, under the administrator's policy (docs/broker.md).

Two halves, at two layers:

- kernel side, at the backends' layer (``backends.factory`` registers it): ``wire`` (the
  request and event format), ``transport`` (a Unix socket or HTTP through the hub) and
  ``client`` (``BrokerBackend``: the container backend of a kernel with ``JX_BROKER`` set);
- broker side, at the top with the CLI: ``service`` (the requests), ``runs`` (one run: admit,
  queue, start, stream, finish), ``sandboxes`` (each user's container backend), ``rules`` (the
  policy file with its user and group sections and quotas), ``quotas`` (fair queue, rate
  limit), ``audit``, ``records``, ``unix`` and ``hub`` (the two servers), ``hubauth`` (tokens
  checked against the hub) and ``cli``.

This module imports nothing, so the kernel side loads without the broker side.
"""
