"""Build glue that pyproject.toml cannot say (its ``packages`` is either a list or a ``find``, never both): the
wheel carries the checkout's top-level ``conf/``, the one copy of the Hydra configs, as ``ssaf/conf/``, so that
``ssaf-train`` and ``ssaf-dashboard`` run from any directory (``ssaf.settings.config_dir`` finds them).
The packages and their data files are listed here (pyproject.toml's ``package-data`` would replace
``package_data`` below, not add to it); everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

# conf/ and each config group under it (conf/task, conf/attn, ...) as packages of yaml files; the build runs
# in the project root.
conf = ["ssaf.conf", *(f"ssaf.conf.{d.name}" for d in sorted(Path("conf").iterdir()) if d.is_dir())]
setup(
    packages=[*find_namespace_packages("src", include=["ssaf*"]), *conf],
    package_dir={"": "src", "ssaf.conf": "conf"},
    package_data={"ssaf": ["metrics/*/*.py", "data/sample/*"], **{name: ["*.yaml"] for name in conf}},
)
