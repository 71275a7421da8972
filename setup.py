"""The build step only (the project's metadata is in pyproject.toml): a wheel carries the top-level conf/ as
deepfake/conf, so an installed package finds its configs (deepfake/commands/conf.py). An editable install
reads the repository's conf/ in place."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConf(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            self.copy_tree("conf", str(Path(self.build_lib) / "deepfake" / "conf"))


setup(cmdclass={"build_py": BuildPyWithConf})
