"""The homelab twin: a local stand-in for the Proxmox host, the k3s cluster and the inference workloads.

Run it with ``python -m lab up|down|status|reset``. See docs/design.md for the parts and README.md for use.
"""
