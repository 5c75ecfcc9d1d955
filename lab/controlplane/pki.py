"""Certificates, the service-account key and kubeconfigs of the twin's control plane.

One CA (``trustme``) signs every certificate, as in a kubeadm or k3s cluster: the serving certificate of
etcd, the API server and the twin's other HTTPS APIs (SANs: the twin's address, ``127.0.0.1``, ``localhost``
and the in-cluster names of the ``kubernetes`` Service) and one client certificate per identity. Kubernetes
takes the user from the certificate's CN and the groups from its O (x509 client certificate authentication):

==========================  ==============================  ==================================
identity                    CN                              O
==========================  ==============================  ==================================
admin (LAB_DIR/kubeconfig)  twin-admin                      system:masters
kube-controller-manager     system:kube-controller-manager  -
kube-scheduler              system:kube-scheduler           -
kube-proxy (service proxy)  system:kube-proxy               -
kubelet of node N           system:node:N                   system:nodes
API server -> kubelet       kube-apiserver-kubelet-client   system:masters
API server -> etcd          kube-apiserver-etcd-client      -
==========================  ==============================  ==================================

Files go to ``LAB_DIR/pki`` with mode 0600; the CA certificate also to ``LAB_DIR/ca.pem`` (clients verify
against it). Everything is created anew at each ``lab up`` of an empty LAB_DIR and reused after.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# the first address of k3s's default service CIDR 10.43.0.0/16: the ClusterIP of default/kubernetes
KUBERNETES_SERVICE_IP = "10.43.0.1"
IN_CLUSTER_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)
    return path


class Pair:
    """A certificate and its key on disk."""

    def __init__(self, cert: Path, key: Path):
        self.cert = cert
        self.key = key

    def pem_data(self) -> tuple[str, str]:
        return (base64.b64encode(self.cert.read_bytes()).decode(), base64.b64encode(self.key.read_bytes()).decode())


class LabPKI:
    """The twin's CA and certificates under ``LAB_DIR/pki`` (created once, reused by later ``lab up``)."""

    def __init__(self, lab_dir: Path, address: str):
        self.dir = lab_dir / "pki"
        self.address = address
        self.ca_file = lab_dir / "ca.pem"

    # -- files -------------------------------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.dir / name

    def pair(self, name: str) -> Pair:
        return Pair(self.path(f"{name}.pem"), self.path(f"{name}-key.pem"))

    @property
    def sa_key(self) -> Path:
        return self.path("service-account-key.pem")

    @property
    def sa_pub(self) -> Path:
        return self.path("service-account.pem")

    def exists(self) -> bool:
        return (
            self.path("ca-key.pem").exists()
            and self.ca_file.exists()
            and self.pair("server").cert.exists()
            and self._server_matches()
        )

    def _server_matches(self) -> bool:
        marker = self.path("address")
        return marker.exists() and marker.read_text().strip() == self.address

    # -- creation ----------------------------------------------------------------------------------------------

    def create(self, identities: dict[str, tuple[str, str | None]]) -> None:
        """Create the CA, the serving certificate, ``identities`` (name -> (CN, O)) and the service-account key."""
        ca = trustme.CA(organization_name="homelab twin", organization_unit_name="homelab twin CA")
        _write(self.path("ca.pem"), ca.cert_pem.bytes())
        _write(self.path("ca-key.pem"), ca.private_key_pem.bytes())
        _write(self.ca_file, ca.cert_pem.bytes())
        server = ca.issue_cert(
            self.address,
            "127.0.0.1",
            "localhost",
            KUBERNETES_SERVICE_IP,
            *IN_CLUSTER_NAMES,
            common_name="homelab-twin",
            organization_unit_name="homelab twin",
        )
        self._store("server", server)
        for name, (cn, org) in identities.items():
            # a DNS name too: a certificate without any subjectAltName entry has an empty, critical SAN extension
            # that Go's x509 refuses ("unhandled critical extension")
            cert = ca.issue_cert(
                f"{name}.homelab-twin", common_name=cn, organization_name=org, organization_unit_name="homelab twin"
            )
            self._store(name, cert)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(
            self.sa_key,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            ),
        )
        _write(
            self.sa_pub,
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        )
        _write(self.path("address"), self.address.encode())

    def _store(self, name: str, cert: trustme.LeafCert) -> None:
        pair = self.pair(name)
        _write(pair.cert, b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        _write(pair.key, cert.private_key_pem.bytes())

    # -- use ---------------------------------------------------------------------------------------------------

    def server_context(self) -> ssl.SSLContext:
        """TLS context for the twin's own HTTPS APIs (Proxmox, registry), with the serving certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        pair = self.pair("server")
        ctx.load_cert_chain(pair.cert, pair.key)
        return ctx

    def kubeconfig(self, path: Path, server: str, identity: str, cluster: str = "homelab-twin") -> Path:
        """Write a kubeconfig for ``identity`` (a name given to :meth:`create`) with the certificates inline."""
        cert, key = self.pair(identity).pem_data()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": cluster,
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": base64.b64encode(self.ca_file.read_bytes()).decode(),
                    },
                }
            ],
            "users": [{"name": identity, "user": {"client-certificate-data": cert, "client-key-data": key}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": identity}}],
            "current-context": cluster,
        }
        return _write(path, yaml.safe_dump(config, sort_keys=False).encode())
