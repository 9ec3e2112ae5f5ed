"""The sandbox API server's TLS material: a CA of its own and a server certificate it signed.

EKS clusters serve their API with a cluster CA that kubeconfigs carry as
`certificate-authority-data`; the sandbox does the same, so clients verify the server exactly as
they do against EKS. Keys are P-256 (generated in about a millisecond, unlike RSA).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsMaterial:
    """PEM files on disk plus the CA in the form kubeconfigs and EKS DescribeCluster carry it."""

    ca_cert_path: Path
    server_cert_path: Path
    server_key_path: Path
    ca_pem: bytes
    ca_cert: x509.Certificate | None = None  # kept in memory to sign other servers' certificates (the ALB's)
    ca_key: ec.EllipticCurvePrivateKey | None = None

    @property
    def ca_pem_b64(self) -> str:
        """`certificate-authority-data`: base64 of the CA's PEM."""
        return base64.b64encode(self.ca_pem).decode("ascii")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def generate_tls(directory: Path, *, cluster_name: str = "qwen3-sandbox") -> TlsMaterial:
    """Create a CA and a server certificate for 127.0.0.1/localhost under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=365)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{cluster_name}-ca"))
        .issuer_name(_name(f"{cluster_name}-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    material = TlsMaterial(directory / "ca.crt", directory / "apiserver.crt", directory / "apiserver.key", ca_pem,
                           ca_cert, ca_key)
    material.ca_cert_path.write_bytes(ca_pem)
    issue_certificate(material, material.server_cert_path, material.server_key_path, "kube-apiserver",
                      ["localhost", "kubernetes", "kubernetes.default.svc"], ips=["127.0.0.1"])
    return material


def issue_certificate(ca: TlsMaterial, cert_path: Path, key_path: Path, common_name: str, dns_names: list[str],
                      ips: list[str] = ()) -> None:
    """A server certificate for `dns_names` (and `ips`) signed by `ca`, written as PEM (key mode 0600)."""
    if ca.ca_cert is None or ca.ca_key is None:
        raise ValueError("this TlsMaterial has no CA key in memory to sign with; make it with generate_tls")
    now = datetime.datetime.now(datetime.timezone.utc)
    server_key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips] + [x509.DNSName(n) for n in dns_names]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.ca_key.public_key()), critical=False)
        .sign(ca.ca_key, hashes.SHA256())
    )
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_path.chmod(0o600)
