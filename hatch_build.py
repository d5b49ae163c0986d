"""Hatchling build hook: compile the optional C row decoder, ``ztfcat/ingest/_rowdecode.c``.

Why a hook and not a change of build backend: the wheel's ``force-include`` of ``migrations`` and
``alembic.ini`` stays as it is, and a machine without a C compiler still gets a working (pure-Python,
slower) install.  setuptools only lends its compiler driver (``build_ext``), which knows each
platform's flags and the Python headers' location.  ``ZTFCAT_NO_EXTENSION=1`` skips the build.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

EXTENSION = "ztfcat.ingest._rowdecode"
SOURCE = "ztfcat/ingest/_rowdecode.c"


class RowDecodeBuildHook(BuildHookInterface):
    """Adds the compiled extension to a wheel (or next to the sources for an editable install)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or os.environ.get("ZTFCAT_NO_EXTENSION"):
            return
        editable = version == "editable"
        work = tempfile.mkdtemp(prefix="ztfcat-build-")
        try:
            built = _compile(Path(self.root), Path(work), inplace=editable)
        except Exception as exc:  # no compiler, no headers: the package works without it
            self.app.display_warning(
                f"ztfcat: the C row decoder was not built ({type(exc).__name__}: {exc}); "
                "alerts will be decoded with fastavro (slower)"
            )
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if not editable:
            build_data["force_include"][str(built)] = f"ztfcat/ingest/{built.name}"


def _compile(root: Path, work: Path, *, inplace: bool) -> Path:
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    here = os.getcwd()
    os.chdir(root)  # build_ext resolves sources and in-place targets relative to the project
    try:
        dist = Distribution({"name": "ztfcat", "ext_modules": [Extension(EXTENSION, [SOURCE])]})
        command = build_ext(dist)
        command.inplace = inplace
        command.build_lib = str(work / "lib")
        command.build_temp = str(work / "temp")
        command.ensure_finalized()
        command.run()
        return (root / command.get_ext_fullpath(EXTENSION)).resolve()
    finally:
        os.chdir(here)
