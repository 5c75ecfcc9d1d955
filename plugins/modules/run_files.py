#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, annotations, division, print_function

DOCUMENTATION = r"""
module: run_files
short_description: Write a run's files (report, snapshot) into its directory on the controller
description:
  - Writes each of O(files) into O(dir) on the Ansible controller, creating O(dir) (and its parents) first. Each
    file is written to a temporary file in O(dir) and renamed over the old one, so a reader (or a controller killed
    mid-write) sees the old file or the new one, never half of one.
  - The files of a run (C(report.json), C(report.md), C(snapshot.json)) are the run's artefacts, not managed
    state; the task reports C(changed=false).
  - This is an action plugin; it runs on the controller and writes there (as M(ansible.builtin.fetch) does with
    its C(dest)), whatever host the task runs for. Writing in-process saves the three module runs
    (M(ansible.builtin.file), M(ansible.builtin.stat), M(ansible.builtin.copy)) a file would cost, about a second
    each on a small controller.
version_added: "0.1.0"
author: home-lab inference project (!UNKNOWN)
extends_documentation_fragment:
  - homelab.inference.attributes
  - homelab.inference.attributes.action
options:
  dir:
    description:
      - The directory on the controller; created with O(dir_mode) when missing.
    type: path
    required: true
  files:
    description:
      - File name (no directory part) -> content (text, written as UTF-8 as given).
    type: dict
    required: true
  mode:
    description:
      - Permissions of the files (octal string).
    type: str
    default: "0640"
  dir_mode:
    description:
      - Permissions of O(dir) when it is created (octal string).
    type: str
    default: "0750"
attributes:
  check_mode:
    support: full
    details: Writes nothing in check mode.
  diff_mode:
    support: none
seealso:
  - module: ansible.builtin.copy
"""

EXAMPLES = r"""
- name: Write the report
  homelab.inference.run_files:
    dir: "{{ inference_report_run_dir }}"
    files:
      report.json: "{{ inference_report_data | to_nice_json }}\n"
      report.md: "{{ lookup('ansible.builtin.template', 'report.md.j2') }}"
"""

RETURN = r"""
paths:
  description: The files written (absolute paths), in the order of O(files); empty in check mode.
  returned: always
  type: list
  elements: str
  sample: [/srv/reports/20261207T040000Z-upgrade-ollama-qwen2.5_14b/report.json]
"""
