"""Puts the project's console scripts ([project.scripts] in pyproject.toml) into the venv's bin/.

The project is on the venv's path through a .pth file rather than installed, so nothing else writes
its launchers; each one is what pip would write for an installed package: the venv's Python running
the entry point.
"""

from __future__ import annotations

import sys
import sysconfig
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

LAUNCHER = """#!{python}
import sys

from {module} import {function}

if __name__ == "__main__":
    sys.exit({function}())
"""


def main(bin_dir: Path | None = None) -> list[Path]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    bin_dir = bin_dir or Path(sysconfig.get_path("scripts"))
    written = []
    for name, target in project.get("scripts", {}).items():
        module, _, function = target.partition(":")
        path = bin_dir / name
        path.write_text(LAUNCHER.format(python=sys.executable, module=module, function=function), encoding="utf-8")
        path.chmod(0o755)
        print(f"installed {path}")
        written.append(path)
    return written


if __name__ == "__main__":
    main()
