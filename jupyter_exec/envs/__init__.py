"""Runtime environments: declare packages and files once, build once, reuse in milliseconds."""

from .builder import BuiltEnv, EnvBuilder
from .cache import EnvCache
from .envspec import EnvSpec
from .venv import VenvBuilder

__all__ = ["BuiltEnv", "EnvBuilder", "EnvCache", "EnvSpec", "VenvBuilder"]
