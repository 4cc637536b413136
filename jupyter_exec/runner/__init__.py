"""The CodeRunner: the request a backend sends and the envelope it gets back (``protocol``),
the stdlib-only program that runs the cell inside the target (``bootstrap``, with
``confine`` for the process sandbox, which applies the ``plans`` the host sends), and how
values cross the boundary as data (``transfer``, ``sanitize``).
"""
