# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function


class ModuleDocFragment:
    """Connection options shared by modules that talk to the Ollama HTTP API (module_utils/ollama_client.py)."""

    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - Base URL of the Ollama HTTP API, without the C(/api) suffix.
      - In the cluster C(http://ollama.ml.svc.cluster.local:11434); in the lab twin port 11434 on the twin's own
        loopback address (C(services) in C(LAB_DIR/endpoints.json)).
      - When left at the default and the environment variable C(OLLAMA_HOST) is set, that is used instead (a bare
        C(host:port) gets C(http://)).
    type: str
    default: http://127.0.0.1:11434
  validate_certs:
    description:
      - Verify the TLS certificate of an C(https) I(api_url).
    type: bool
    default: true
  ca_path:
    description:
      - PEM file with the CA certificate(s) to trust for an C(https) I(api_url), instead of the system store.
    type: path
  timeout:
    description:
      - Timeout in seconds for each HTTP request; for a streamed pull, the longest silence allowed between two
        progress lines.
    type: float
    default: 30
  headers:
    description:
      - Extra HTTP headers sent with every request (for example C(Authorization) for a proxy in front of Ollama).
    type: dict
requirements:
  - httpx >= 0.27 (Python library) on the host that runs the module
"""
