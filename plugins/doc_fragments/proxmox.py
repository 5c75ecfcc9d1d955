# -*- coding: utf-8 -*-
# Shared connection options of the modules that talk to the Proxmox VE API through
# ansible_collections.homelab.inference.plugins.module_utils.proxmox_client (ProxmoxClient, proxmox_argument_spec()).

from __future__ import absolute_import, division, print_function


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  api_host:
    description:
      - Host name or IP address of the Proxmox VE API (C(https://api_host:api_port/api2/json)).
      - Uses the E(PROXMOX_HOST) environment variable if not specified.
    type: str
    required: true
  api_port:
    description:
      - TCP port of the Proxmox VE API.
      - Uses the E(PROXMOX_PORT) environment variable if not specified.
    type: int
    default: 8006
  api_user:
    description:
      - User that owns the API token, as C(USER@REALM), for example C(root@pam).
      - May be left out when O(api_token_id) is given in its full form C(USER@REALM!TOKENID).
      - Uses the E(PROXMOX_USER) environment variable if not specified.
    type: str
  api_token_id:
    description:
      - Name of the API token (C(TOKENID) in C(USER@REALM!TOKENID)), or the full token id.
      - Uses the E(PROXMOX_TOKEN_ID) environment variable if not specified.
    type: str
    required: true
  api_token_secret:
    description:
      - Secret (UUID) of the API token. Never logged or returned.
      - Uses the E(PROXMOX_TOKEN_SECRET) environment variable if not specified.
    type: str
    required: true
  validate_certs:
    description:
      - Verify the TLS certificate of the API. Keep this on; give O(ca_path) for a private CA
        (the Proxmox self-signed CA is C(/etc/pve/pve-root-ca.pem) on the host).
      - Uses the E(PROXMOX_VALIDATE_CERTS) environment variable if not specified.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file with the CA certificate(s) to verify the API certificate with, instead of the system trust store.
      - Uses the E(PROXMOX_CA_PATH) environment variable if not specified.
    type: path
  timeout:
    description:
      - Timeout of each HTTP request to the API, in seconds.
    type: int
    default: 30
  node:
    description:
      - Proxmox VE node that holds the container.
      - When not set, the node is found by listing the containers of every node (C(GET /nodes/{node}/lxc)).
      - Uses the E(PROXMOX_NODE) environment variable if not specified.
    type: str
requirements:
  - proxmoxer >= 2.0
  - requests
notes:
  - "Authentication is by API token only: header C(Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET)."
"""
