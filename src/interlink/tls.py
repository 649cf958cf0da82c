"""TLS for the hub's edges: a private CA and a hub certificate for a quick start
(`interlink init --tls`), and the client side's trust (`client_context`).

Traffic that leaves the machine is encrypted: the hub serves `wss://` and `https://` when it
has a certificate (`hub.tls` in mesh.yaml, or `interlink serve --tls-cert --tls-key`), and
agents and the CLI verify it against the system's trust store or a CA file (a private CA).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


def make_ca(directory: Path, name: str = "Interlink mesh CA", *,
            days: float = 3650) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key) files in `directory` (the key readable by its
    owner only)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


def make_hub_cert(directory: Path, ca_cert: Path, ca_key: Path, hosts: list[str], *,
                  days: float = 825, not_before: datetime.datetime | None = None
                  ) -> tuple[Path, Path]:
    """A server certificate for the hub, signed by the CA, valid for `hosts` (names and IP
    addresses): (certificate, key) files in `directory`."""
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    key = _key()
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(signer, hashes.SHA256()))
    cert_path, key_path = directory / "hub.pem", directory / "hub-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


def default_hosts(bind: str) -> list[str]:
    """The names a hub certificate should carry: loopback, this machine, the bind address."""
    hosts = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    if bind not in ("0.0.0.0", "::", ""):
        hosts.append(bind)
    return hosts


def client_context(ca: str | os.PathLike[str] | None) -> ssl.SSLContext:
    """How an agent or the CLI checks the hub: against `ca` (a PEM file: a private CA) or,
    without one, the system's trust store."""
    return ssl.create_default_context(cafile=str(ca) if ca else None)


def loopback(host: str) -> bool:
    """Whether `host` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
