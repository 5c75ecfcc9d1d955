#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, annotations, division, print_function

DOCUMENTATION = r"""
module: ollama_pull_wait
short_description: Wait for an async ollama_model pull, showing percent, size, rate and time left
description:
  - Waits for the job of an M(homelab.inference.ollama_model) pull started with C(async) and C(poll=0), by asking
    M(ansible.builtin.async_status) for it every O(poll) seconds, all in one task. A retry loop
    (C(until)/C(retries)) would print C(FAILED - RETRYING ... (1440 retries left)) on every poll, which reads as
    failure during a long pull.
  - While it waits it reads the pull's O(progress_file) and prints a line such as
    C(pull qwen2.5:14b 45.2% 4.07 GB/9.00 GB 85.3 MB/s ETA 1m03s (pulling 6e4c38e1172f)), in default output
    and with C(-v), when the pull's status changes and else every O(show_every) seconds. The rate is measured over the
    last 20 seconds of the pull.
  - When the job finishes, returns the pull's own result (C(changed), C(digest) ...) and removes the job's status
    file.
  - This is an action plugin; it runs on the controller.
version_added: "0.1.0"
author: home-lab inference project (!UNKNOWN)
extends_documentation_fragment:
  - homelab.inference.attributes
  - homelab.inference.attributes.action
options:
  jid:
    description:
      - The job id of the pull (C(ansible_job_id) of the registered async task).
    type: str
    required: true
  model:
    description:
      - The model being pulled, for the messages.
    type: str
    required: true
  progress_file:
    description:
      - The pull's progress file (O(homelab.inference.ollama_model#module:progress_file)). Without it the task
        waits silently.
    type: path
  timeout:
    description:
      - Seconds to wait for the pull in all; the task then fails naming the pull and its last progress.
    type: float
    default: 7200
  poll:
    description:
      - Seconds between two status checks at most. The first checks come sooner (0.25 s, then doubling up to
        O(poll)), so a pull with nothing to do (the model is there) ends within a moment.
    type: float
    default: 5
  show_every:
    description:
      - Seconds between two progress lines while the status stays the same; C(0) prints one per poll.
    type: float
    default: 10
attributes:
  check_mode:
    support: none
  diff_mode:
    support: none
seealso:
  - module: homelab.inference.ollama_model
  - module: ansible.builtin.async_status
"""

EXAMPLES = r"""
- name: Start the pull
  homelab.inference.ollama_model:
    name: qwen2.5:14b
    progress_file: /tmp/qwen.json
  async: 7200
  poll: 0
  register: pull_job

- name: Wait for the pull
  homelab.inference.ollama_pull_wait:
    jid: "{{ pull_job.ansible_job_id }}"
    model: qwen2.5:14b
    progress_file: /tmp/qwen.json
  register: pull
"""

RETURN = r"""
changed:
  description: Whether the pull changed anything (the model was not present before).
  returned: always
  type: bool
wait_seconds:
  description: Seconds the task waited for the job.
  returned: when the job finished
  type: float
digest:
  description: The pulled model's digest, as M(homelab.inference.ollama_model) returns it.
  returned: when the pull succeeded
  type: str
"""
