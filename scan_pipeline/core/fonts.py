"""The font the sheet is printed in (DejaVu Sans): the sheet's renderer draws with it, and the
row-number reader compares a smeared printed number with the numbers it draws."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

from scan_pipeline.core.errors import MissingDependencyError

_FONT_FILES = {
    "regular": ("DejaVuSans.ttf", "DejaVu Sans:style=Book"),
    "bold": ("DejaVuSans-Bold.ttf", "DejaVu Sans:style=Bold"),
}


@cache
def font_path(style: str) -> str:
    filename, pattern = _FONT_FILES[style]
    for base in (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu")):
        if (base / filename).exists():
            return str(base / filename)
    if shutil.which("fc-match"):
        found = subprocess.run(["fc-match", "-f", "%{file}", pattern], capture_output=True, text=True).stdout
        if found.endswith(filename):
            return found
    raise MissingDependencyError(
        f"the font {filename} is not installed",
        hint="install it with `apt-get install fonts-dejavu-core` (or run `make install`)",
    )
