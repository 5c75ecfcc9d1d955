# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""TLS verification as the project's HTTP clients take it (``verify``: true, false or a CA bundle's path)."""

from __future__ import annotations

import ssl


def httpx_verify(verify: bool | str) -> bool | ssl.SSLContext:
    """Translate ``verify`` (True/False, or the path of a PEM CA bundle) into what httpx 0.28 accepts.

    httpx 0.28 deprecated a path as ``verify``; an :class:`ssl.SSLContext` built from the bundle replaces it
    (https://www.python-httpx.org/advanced/ssl/). Raises :class:`OSError` (or :class:`ssl.SSLError`) when the
    bundle cannot be read.
    """
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return bool(verify)
