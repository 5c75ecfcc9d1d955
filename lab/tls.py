"""TLS for the twin's HTTPS APIs: a self-signed CA (trustme) written to ``LAB_DIR/ca.pem``."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


class LabTLS:
    """A CA and one server certificate for ``127.0.0.1`` and ``localhost``.

    The CA is created at every ``lab up`` and written to ``ca_file``; clients verify against it
    (kubeconfig ``certificate-authority-data``, proxmoxer/httpx ``verify=ca_file``).
    """

    def __init__(self, ca_file: Path):
        self.ca = trustme.CA(organization_name="homelab twin")
        self.server_cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = ca_file
        ca_file.parent.mkdir(parents=True, exist_ok=True)
        ca_file.write_bytes(self.ca.cert_pem.bytes())

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(ctx)
        return ctx

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()
