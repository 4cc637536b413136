"""Wheel build hook: wheels carry the JupyterLab side panel, built here when needed.

A wheel installs the built extension in ``share/jupyter/labextensions/jupyter-exec``, so
users never need Node. ``labextension/build.sh`` builds it only when its sources changed.
Editable installs skip this: ``scripts/setup`` builds the panel and links it into the
environment (``scripts/setup.d/20-labextension.sh``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

TARGET = "share/jupyter/labextensions/jupyter-exec"


class LabExtensionHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        source = Path(self.root) / "labextension"
        subprocess.run(["bash", str(source / "build.sh")], check=True)
        build_data["shared_data"][str(source / "dist")] = TARGET
        build_data["shared_data"][str(source / "install.json")] = f"{TARGET}/install.json"
