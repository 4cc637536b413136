"""The ways a cell can run: ``base`` is the contract, ``factory`` the registry by name, and
each engine is a package of its own (``process``, ``container``, ``raycluster``).

Nothing here is imported eagerly, so importing the contract never pulls in an engine.
"""
