"""The ways a cell can run: ``base`` is the contract, ``names`` the backends' names (plain
strings), ``runs`` what backends share to follow their runs, ``factory`` the registry by
name, and each backend is a package of its own (``process``, ``container``, ``raycluster``,
and ``broker``: container runs sent to a broker).

Nothing here is imported eagerly, so importing the contract never pulls in a backend's libraries
(Docker's SDK, Ray).
"""
