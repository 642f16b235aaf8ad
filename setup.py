"""The production wheel leaves out the modules that servicestage-job-poller-devkit ships.

pyproject.toml excludes the emulator package (``poller.sim``) declaratively; setuptools has no
such switch for single modules of an included package, so ``build_py`` drops these two here.
Editable installs map the whole ``poller/`` directory, so a checkout still imports them.
"""

from setuptools import setup
from setuptools.command.build_py import build_py

DEVKIT_MODULES = {"poller.demo", "poller.localredis"}  # devkit/poller/ links to both


class BuildPyWithoutDevkit(build_py):
    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        modules: list[tuple[str, str, str]] = super().find_package_modules(package, package_dir)
        return [m for m in modules if f"{m[0]}.{m[1]}" not in DEVKIT_MODULES]


setup(cmdclass={"build_py": BuildPyWithoutDevkit})
