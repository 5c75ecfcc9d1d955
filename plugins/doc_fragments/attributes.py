# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function


class ModuleDocFragment:
    """What the standard module attributes mean; each module states its own C(support) (as community.general's
    C(attributes) fragment does)."""

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return the changed status it predicts without changing the target.
  diff_mode:
    description: Returns what changed (or would change, in C(check_mode)) as C(diff) with C(before) and C(after).
"""

    # for the modules that are action plugins (their documentation is a stub in plugins/modules)
    ACTION = r"""
options: {}
attributes:
  action:
    description: Has an action plugin of the same name that runs on the Ansible controller.
    support: full
    details: The whole module runs on the controller, in the task's worker process (no module is sent to a host).
"""
