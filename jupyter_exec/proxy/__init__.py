"""The host side of ``--network HOST,...``: a proxy gate per run (docs/network.md)."""

from .server import MAX_OPEN, MAX_RECORDS, RELAY_PORT, Connection, Gate, Traffic, gate_for, open_gate

__all__ = ["MAX_OPEN", "MAX_RECORDS", "RELAY_PORT", "Connection", "Gate", "Traffic", "gate_for", "open_gate"]
