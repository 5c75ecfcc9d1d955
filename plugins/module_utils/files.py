# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files a reader may open at any instant: a run's report and snapshot, a pull's progress, the probe's pause file."""

from __future__ import annotations

import os
import tempfile


def write_atomic(path: str, text: str, mode: int = 0o640) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same directory renamed over it, so a
    reader, or a process killed mid-write, sees the old content or the new, never part of it. The directory must
    exist; the temporary file is removed when the write fails.

    Raises:
        OSError: the file cannot be written.
    """
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
