#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, annotations, division, print_function

DOCUMENTATION = r"""
module: litellm_route_check
short_description: Send one chat request through the LiteLLM proxy and report which model group served it
description:
  - Sends one non-streaming C(POST /v1/chat/completions) request for a model alias through the LiteLLM proxy and
    reads the routing headers LiteLLM adds to the response.
  - C(x-litellm-model-group) is the model group (C(model_name) in the proxy config) that served the request;
    C(x-litellm-attempted-fallbacks) is 0 when the requested group served it and greater than 0 when a fallback
    group did; C(x-litellm-model-api-base) is the backend URL; C(x-litellm-model-name) the provider model
    (for example C(ollama_chat/phi4-mini)). Verified with LiteLLM 1.106.2.
  - A backend that is down, or vLLM answering 404 because the requested model name differs from what it serves,
    both make LiteLLM fall back silently; only the headers tell. Use O(expect_model_group) to catch it.
  - O(retries) and O(delay) wait for a route to settle, for example until requests return to vLLM after it was
    scaled back up.
  - The module is read-only (C(changed) is always false) and also runs in check mode.
version_added: "0.1.0"
author: home-lab inference project (!UNKNOWN)
extends_documentation_fragment:
  - homelab.inference.attributes
  - homelab.inference.openai_api
  - homelab.inference.openai_api.timeout
options:
  alias:
    description:
      - The model alias to request (a C(model_name) of the LiteLLM C(model_list)), for example C(vllm-qwen).
    type: str
    required: true
  prompt:
    description:
      - The user message to send.
    type: str
    default: Reply with the single word OK.
  max_tokens:
    description:
      - C(max_tokens) of the request, to keep the answer short.
    type: int
    default: 16
  expect_model_group:
    description:
      - Fail unless this model group served the request (after O(retries)).
    type: str
  expect_api_base:
    description:
      - Fail unless the request was served by this backend URL (C(x-litellm-model-api-base); a trailing slash is
        ignored).
    type: str
  retries:
    description:
      - Extra attempts when the request fails or an expectation is not met.
    type: int
    default: 0
  delay:
    description:
      - Seconds to wait between attempts.
    type: float
    default: 5
notes:
  - O(api_url) is the proxy's base URL; C(/v1) is appended when missing (LiteLLM serves both paths).
  - O(api_key) is the LiteLLM master key (or a virtual key). With a wrong key and no database LiteLLM 1.106.2 answers
    HTTP 400 C(No connected db.); with a database, 401.
  - Uses the C(httpx) Python library on the host that runs the module.
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: vllm-qwen must be served by vLLM itself
  litellm_route_check:
    api_url: http://litellm.ml.svc:4000
    api_key: "{{ litellm_master_key }}"
    alias: vllm-qwen
    expect_model_group: vllm-qwen
    retries: 12
    delay: 5

- name: With vLLM scaled to 0, vllm-qwen must fall back to the CPU Ollama group
  litellm_route_check:
    api_url: http://litellm.ml.svc:4000
    api_key: "{{ litellm_master_key }}"
    alias: vllm-qwen
    expect_model_group: ollama-qwen
  register: route
"""

RETURN = r"""
status:
  description: HTTP status of the last attempt (null when no response arrived).
  returned: always
  type: int
  sample: 200
model_group:
  description: The model group that served the request (C(x-litellm-model-group)).
  returned: always
  type: str
  sample: ollama-qwen
attempted_fallbacks:
  description:
    - C(x-litellm-attempted-fallbacks) as an integer. 0 means the requested group served the request.
    - Greater than 0 means a fallback group served it. It is the fallback depth, not the number of groups
      tried (1.106.2 reports 1 when the second fallback group of the same list served).
  returned: always
  type: int
  sample: 1
fallback:
  description: Whether a fallback group served the request (C(attempted_fallbacks > 0)).
  returned: always
  type: bool
attempted_retries:
  description: C(x-litellm-attempted-retries) as an integer.
  returned: always
  type: int
api_base:
  description: The backend URL that served the request (C(x-litellm-model-api-base)).
  returned: always
  type: str
  sample: http://ollama.ml.svc.cluster.local:11434
model_name:
  description: The provider model that served the request (C(x-litellm-model-name)).
  returned: always
  type: str
  sample: ollama_chat/phi4-mini
model:
  description:
    - The C(model) field of the response body. LiteLLM 1.106.2 rewrites it to the requested alias when the primary
      group served, and keeps the backend's model when a fallback served (for example C(ollama_chat/phi4-mini)).
  returned: always
  type: str
latency:
  description: Seconds the last attempt took.
  returned: always
  type: float
attempts:
  description: Number of requests sent.
  returned: always
  type: int
headers:
  description: The C(x-litellm-*) response headers of the last attempt (no other headers, never the key).
  returned: always
  type: dict
error:
  description: Error of the last attempt, null when it succeeded.
  returned: always
  type: str
"""

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.homelab.inference.plugins.module_utils.openai_client import (
    HAS_HTTPX,
    OpenAIClient,
    OpenAIError,
    openai_api_argument_spec,
    verify_from_params,
)

HEADER_PREFIX = "x-litellm-"


def _int_header(headers: dict, name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def v1_url(url: str) -> str:
    """The LiteLLM base URL with the ``/v1`` version path (appended when missing)."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def route_info(status: int | None, headers: dict, body: dict | None, latency: float, error: str | None) -> dict:
    """The routing facts of one response (or error response) from its headers and body."""
    litellm_headers = {k: v for k, v in headers.items() if k.lower().startswith(HEADER_PREFIX)}
    fallbacks = _int_header(headers, "x-litellm-attempted-fallbacks")
    return {
        "status": status,
        "model_group": headers.get("x-litellm-model-group"),
        "attempted_fallbacks": fallbacks,
        "fallback": bool(fallbacks),
        "attempted_retries": _int_header(headers, "x-litellm-attempted-retries"),
        "api_base": headers.get("x-litellm-model-api-base"),
        "model_name": headers.get("x-litellm-model-name"),
        "model": (body or {}).get("model") if isinstance(body, dict) else None,
        "latency": round(latency, 3),
        "headers": litellm_headers,
        "error": error,
    }


def mismatches(info: dict, expect_model_group: str | None, expect_api_base: str | None) -> list[str]:
    """What differs from the expectations, one message each."""
    problems = []
    if expect_model_group is not None and info["model_group"] != expect_model_group:
        if info["model_group"] is None:
            problems.append(
                f"no x-litellm-model-group header in the response (expected {expect_model_group!r}); "
                "is api_url a LiteLLM proxy?"
            )
        else:
            problems.append(
                f"served by model group {info['model_group']!r} (attempted fallbacks: {info['attempted_fallbacks']}, "
                f"api base {info['api_base']}), expected {expect_model_group!r}"
            )
    if expect_api_base is not None and (info["api_base"] or "").rstrip("/") != expect_api_base.rstrip("/"):
        problems.append(f"served by api base {info['api_base']!r}, expected {expect_api_base!r}")
    return problems


def module_args() -> dict:
    """The argument spec: the OpenAI API options (doc fragment openai_api) and the route's expectations."""
    argument_spec = openai_api_argument_spec()
    argument_spec.update(
        alias={"type": "str", "required": True},
        prompt={"type": "str", "default": "Reply with the single word OK."},
        max_tokens={"type": "int", "default": 16, "no_log": False},
        expect_model_group={"type": "str"},
        expect_api_base={"type": "str"},
        retries={"type": "int", "default": 0},
        delay={"type": "float", "default": 5.0},
    )
    return argument_spec


def option_problems(params: dict) -> list[str]:
    """Problems with the numeric options, each naming the field and what it must be."""
    problems = []
    if params["retries"] < 0:
        problems.append(f"retries must be 0 or more (got {params['retries']})")
    if params["delay"] < 0:
        problems.append(f"delay must be 0 or more seconds (got {params['delay']:g})")
    if params["timeout"] <= 0:
        problems.append(f"timeout must be a positive number of seconds (got {params['timeout']:g})")
    if params["max_tokens"] < 1:
        problems.append(f"max_tokens must be at least 1 (got {params['max_tokens']})")
    return problems


class RouteCheck:
    """Ask LiteLLM for the alias until the answer comes from the expected model group (or the attempts run out)."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.params = module.params
        self.secret = self.params.get("api_key")

    def run(self) -> None:
        params = self.params
        if not HAS_HTTPX:
            self.module.fail_json(msg=missing_required_lib("httpx"))
        problems = option_problems(params)
        if problems:
            self.module.fail_json(msg="invalid options: " + "; ".join(problems), changed=False)
        attempts, info, problems = 0, {}, []
        with OpenAIClient(
            v1_url(params["api_url"]), api_key=self.secret, timeout=params["timeout"], verify=verify_from_params(params)
        ) as client:
            for attempt in range(params["retries"] + 1):
                if attempt:
                    time.sleep(params["delay"])
                attempts += 1
                info, problems = self.ask(client)
                if not problems:
                    break
        # api_key is no_log: AnsibleModule masks its value wherever it occurs in the result (an echoed key too)
        result = dict(info, changed=False, attempts=attempts, alias=params["alias"])
        if problems:
            self.module.fail_json(
                msg=f"route check for {params['alias']!r} failed after {attempts} attempt(s): " + "; ".join(problems),
                **result,
            )
        self.module.exit_json(
            msg=(
                f"{params['alias']!r} served by model group {info['model_group']!r} via {info['api_base']} "
                f"(attempted fallbacks: {info['attempted_fallbacks']}) in {info['latency']:.3f} s"
            ),
            **result,
        )

    def ask(self, client) -> tuple[dict, list[str]]:
        """One chat request for the alias: its routing facts and what differs from the expectations."""
        params = self.params
        started = time.monotonic()
        try:
            body, headers = client.chat(
                params["alias"],
                [{"role": "user", "content": params["prompt"]}],
                extra_body={"max_tokens": params["max_tokens"]},
                timeout=params["timeout"],
            )
        except OpenAIError as exc:
            info = route_info(exc.status, exc.headers, None, time.monotonic() - started, str(exc))
            return info, [f"request for {params['alias']!r} failed: {exc}"]
        info = route_info(200, headers, body, time.monotonic() - started, None)
        return info, mismatches(info, params.get("expect_model_group"), params.get("expect_api_base"))


def main():
    module = AnsibleModule(argument_spec=module_args(), supports_check_mode=True)
    RouteCheck(module).run()


if __name__ == "__main__":
    main()
