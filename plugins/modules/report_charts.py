#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, annotations, division, print_function

DOCUMENTATION = r"""
module: report_charts
short_description: Draw a run report's pictures (PNG) from its gate results and its client probe's events
description:
  - Per gate result (a M(homelab.inference.llm_validate) result) it draws the latency distribution of the challenger
    and, when the gate had a baseline, of the champion (seconds); the confusion matrix of document types of each;
    and every rate check with its confidence interval against its threshold.
  - From the client probe's events file (JSON lines of M(homelab.inference.llm_probe)) it draws each alias's
    requests through the run, failures, and where the model group that answered changed (a detour, the switch).
  - Writes C(<name>.png) files and C(charts.json) (the data behind every picture) into O(dest). Draws with
    matplotlib's headless Agg backend; a picture whose bytes did not change is not rewritten.
version_added: "0.2.0"
author: home-lab inference project (!UNKNOWN)
extends_documentation_fragment:
  - homelab.inference.attributes
options:
  dest:
    description: Directory the pictures and C(charts.json) go to (the run's report directory); created if missing.
    type: path
    required: true
  gate:
    description: Gate results by name (the report's C(gate), tier -> M(homelab.inference.llm_validate) result).
    type: dict
    default: {}
  probe_events_file:
    description: The client probe's events (JSON lines, each C(alias), C(start) (epoch seconds), C(duration)
      (seconds), C(ok), C(model_group)); no probe picture when omitted or missing.
    type: path
attributes:
  check_mode:
    support: full
    details: Draws nothing in check mode and says which pictures it would write.
  diff_mode:
    support: none
notes:
  - Uses the C(matplotlib) Python library on the host that runs the module.
"""

EXAMPLES = r"""
- name: Draw the report's pictures
  homelab.inference.report_charts:
    dest: "{{ inference_report_run_dir }}"
    gate: "{{ llm_gate_results }}"
    probe_events_file: "{{ inference_run_dir }}/probe.jsonl"
"""

RETURN = r"""
problems:
  description: One message per picture that could not be drawn (the others are).
  returned: always
  type: list
  elements: str
charts:
  description: One entry per picture, C(file) (its name in O(dest)), C(title), C(width) and C(height) (pixels)
    and C(data) (what it shows).
  returned: always
  type: list
  elements: dict
"""

import hashlib
import json
import os
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.homelab.inference.plugins.module_utils.llm_gate import DOCUMENT_TYPES
from ansible_collections.homelab.inference.plugins.module_utils.report_charts import (
    MATPLOTLIB_IMPORT_ERROR,
    confusion,
    confusion_chart,
    latency_chart,
    probe_chart,
    rates_chart,
)


def slug(name: str) -> str:
    """A file name part of a gate's name: ``ollama through LiteLLM (ollama-qwen)`` gives
    ``ollama-through-litellm-ollama-qwen``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gate"


def png_size(path: str) -> tuple[int, int]:
    """Width and height in pixels, from the PNG's IHDR chunk."""
    with open(path, "rb") as fh:
        header = fh.read(24)
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def read_events(path: str | None) -> list[dict]:
    if not path or not os.path.exists(path):
        return []
    events = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut short by a stopped probe
            if isinstance(event, dict) and {"alias", "start", "duration", "ok"} <= set(event):
                events.append(event)
    return events


class Charts:
    """Plan the pictures, draw each into a temporary file, keep it when its bytes differ from what is there."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.dest = module.params["dest"]
        self.charts: list[dict] = []
        self.problems: list[str] = []
        self.changed = False

    def plan(self) -> list[tuple[str, str, callable]]:
        planned = []
        for name, gate in (self.module.params["gate"] or {}).items():
            per_document = gate.get("per_document") or [] if isinstance(gate, dict) else []
            if not per_document:
                continue
            champion = gate.get("champion_per_document") or []
            model, champ = gate.get("model", name), (gate.get("baseline") or {}).get("model", "champion")
            latencies = {f"challenger {model}": [d["latency"] for d in per_document if d.get("latency") is not None]}
            matrices = {f"challenger {model}": confusion(per_document, list(DOCUMENT_TYPES))}
            if champion:
                latencies[f"champion {champ}"] = [d["latency"] for d in champion if d.get("latency") is not None]
                matrices[f"champion {champ}"] = confusion(champion, list(DOCUMENT_TYPES))
            limit = (gate.get("thresholds") or {}).get("max_p95_latency")
            base = f"gate-{slug(name)}"
            planned.append(
                (f"{base}-latency.png", f"{name}: latency", lambda p, s=latencies, m=limit: latency_chart(p, s, m))
            )
            planned.append(
                (f"{base}-confusion.png", f"{name}: document types", lambda p, m=matrices: confusion_chart(p, m))
            )
            if gate.get("checks"):
                planned.append((f"{base}-rates.png", f"{name}: rates", lambda p, c=gate["checks"]: rates_chart(p, c)))
        events = read_events(self.module.params["probe_events_file"])
        if events:
            planned.append(("probe.png", "what clients saw (client probe)", lambda p, e=events: probe_chart(p, e)))
        return planned

    def draw(self, name: str, title: str, draw) -> None:
        """Draw one picture; a picture that cannot be drawn is named in RV(problems) and the others still are."""
        target = os.path.join(self.dest, name)
        handle, scratch = tempfile.mkstemp(prefix=".chart-", suffix=".png", dir=self.dest)
        os.close(handle)
        try:
            try:
                data = draw(scratch)
            except Exception as exc:  # matplotlib raises many kinds; the report names the picture
                self.problems.append(f"{name}: {type(exc).__name__}: {exc}")
                return
            width, height = png_size(scratch)
            with open(scratch, "rb") as fh:
                new = hashlib.sha256(fh.read()).hexdigest()
            old = None
            if os.path.exists(target):
                with open(target, "rb") as fh:
                    old = hashlib.sha256(fh.read()).hexdigest()
            if new != old:
                os.replace(scratch, target)
                self.changed = True
        finally:
            if os.path.exists(scratch):
                os.unlink(scratch)
        self.charts.append({"file": name, "title": title, "width": width, "height": height, "data": data})

    def run(self) -> None:
        if MATPLOTLIB_IMPORT_ERROR is not None:
            self.module.fail_json(msg=missing_required_lib("matplotlib"), exception=str(MATPLOTLIB_IMPORT_ERROR))
        planned = self.plan()
        if self.module.check_mode:
            self.module.exit_json(changed=bool(planned), charts=[{"file": n, "title": t} for n, t, _draw in planned])
        os.makedirs(self.dest, exist_ok=True)
        for name, title, draw in planned:
            self.draw(name, title, draw)
        index = os.path.join(self.dest, "charts.json")
        text = json.dumps(self.charts, indent=2, sort_keys=True) + "\n"
        old = None
        if os.path.exists(index):
            with open(index, encoding="utf-8") as fh:
                old = fh.read()
        if old != text:
            with open(index, "w", encoding="utf-8") as fh:
                fh.write(text)
            self.changed = True
        for problem in self.problems:
            self.module.warn(f"a picture of the report could not be drawn: {problem}")
        self.module.exit_json(changed=self.changed, charts=self.charts, problems=self.problems)


def module_args() -> dict:
    return {
        "dest": {"type": "path", "required": True},
        "gate": {"type": "dict", "default": {}},
        "probe_events_file": {"type": "path"},
    }


def main():
    module = AnsibleModule(argument_spec=module_args(), supports_check_mode=True)
    Charts(module).run()


if __name__ == "__main__":
    main()
