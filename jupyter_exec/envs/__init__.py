"""Runtime environments: declare packages and files once, build once, reuse in milliseconds."""

from .cache import BuiltEnv, EnvBuildError, EnvCache
from .spec import EnvSpec
from .venv import VenvBuilder

__all__ = ["BuiltEnv", "EnvBuildError", "EnvCache", "EnvSpec", "VenvBuilder"]
