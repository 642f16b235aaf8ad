"""The devkit's version and requirement, and what its editable install is.

Version: the devkit's modules live inside the main distribution's ``poller`` package and use
its internals, so both are one release and the devkit requires exactly the main version.  That
version is written once, in ../pyproject.toml, read here through the symlink
``main-pyproject.toml`` (a copy of it in the devkit's sdist).

Editable install (``pip install -e devkit``): its metadata only, no import hook.  It goes with
the main distribution's editable install (``pip install -e . -e devkit``, as scripts/_env.sh
does), which maps the checkout's whole ``poller/`` directory, the devkit's modules included.  A
second hook for ``poller`` from here, where ``poller/`` has no ``__init__.py``, would make
``poller`` a namespace package and break every import of it.  (For the same reason a regular
install of the devkit goes with a regular install of the main distribution, not an editable.)
"""

import tomllib
from pathlib import Path

from setuptools import setup
from setuptools.command.editable_wheel import editable_wheel

MAIN = Path(__file__).resolve().parent / "main-pyproject.toml"
project = tomllib.loads(MAIN.read_text(encoding="utf-8"))["project"]


class MetadataOnlyEditable(editable_wheel):
    def run(self) -> None:
        self.distribution.packages = []
        self.distribution.package_data = {}
        super().run()


setup(
    version=project["version"],
    install_requires=[f"{project['name']}=={project['version']}"],
    cmdclass={"editable_wheel": MetadataOnlyEditable},
)
