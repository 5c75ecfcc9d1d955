# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared connection options of modules that call an OpenAI-compatible (or Ollama) HTTP API.

The matching argument spec is ``openai_api_argument_spec()`` in ``plugins/module_utils/openai_client.py``.
Use ``extends_documentation_fragment: [openai_api, openai_api.timeout]``; modules with their own timeout options
(``llm_validate``) use ``openai_api`` alone.
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - Base URL of the API.
      - For an OpenAI-compatible API (vLLM, LiteLLM, OpenAI) it includes the version path, like the OpenAI SDK's
        C(base_url) and LiteLLM's C(api_base), for example C(http://vllm-api.ml.svc.cluster.local:8000/v1).
      - For the native Ollama API it is the server root without C(/api), for example
        C(http://ollama.ml.svc.cluster.local:11434).
    type: str
    required: true
  api_key:
    description:
      - "Bearer token sent as C(Authorization: Bearer <api_key>), for example the LiteLLM master key."
      - Omit it for endpoints without authentication (vLLM without C(--api-key), Ollama).
      - Never logged or returned.
    type: str
  validate_certs:
    description:
      - Verify the server's TLS certificate for C(https) URLs.
    type: bool
    default: true
  ca_path:
    description:
      - Path of a PEM CA bundle to trust instead of the system store (for example the lab's C(.lab/ca.pem)).
      - Used only when O(validate_certs=true).
    type: path
"""

    TIMEOUT = r"""
options:
  timeout:
    description:
      - Seconds to wait for each HTTP request (connect, each read, write).
    type: float
    default: 60
"""
