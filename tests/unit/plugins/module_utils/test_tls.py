# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""httpx_verify: a CA bundle becomes a verifying SSL context; true and false pass through; a bad path is an error."""

from __future__ import annotations

import ssl

import certifi
import pytest
from ansible_collections.homelab.inference.plugins.module_utils.tls import httpx_verify


def test_a_ca_bundle_becomes_a_context_that_verifies_the_host():
    context = httpx_verify(certifi.where())
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0


@pytest.mark.parametrize("verify", [True, False])
def test_true_and_false_pass_through(verify):
    assert httpx_verify(verify) is verify


def test_a_missing_bundle_is_an_error_before_any_request(tmp_path):
    with pytest.raises(OSError):
        httpx_verify(str(tmp_path / "missing-ca.pem"))
