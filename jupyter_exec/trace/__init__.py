"""Experiment traces: runs as nodes of a tree, schedulers that grow it, and ``explore``."""

from __future__ import annotations

from .explore import explore
from .model import Node, Trace
from .schedulers import MCTS, Probabilistic, Random, RoundRobin, Scheduler, Selection, SOTABased, TraceLength
from .tables import TraceTables
from .timer import Timer

__all__ = [
    "MCTS",
    "Node",
    "Probabilistic",
    "Random",
    "RoundRobin",
    "SOTABased",
    "Scheduler",
    "Selection",
    "Timer",
    "Trace",
    "TraceLength",
    "TraceTables",
    "explore",
]
