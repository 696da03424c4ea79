"""A throwaway public-key infrastructure for the TLS tests (DICOM and HTTPS)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, stem: str, key, certificate) -> tuple[Path, Path]:
    key_path, cert_path = folder / f"{stem}.key", folder / f"{stem}.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def make_pki(folder: Path) -> dict[str, Path]:
    """A test CA, a server and a client certificate it signed (for 127.0.0.1), and a
    self-signed stranger: PEM files in ``folder``, by name."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Test Hospital CA", ca_key, "Test Hospital CA", ca_key, ca=True)
    _, ca_pem = _write(folder, "ca", ca_key, ca)
    files = {"ca": ca_pem}
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        files[f"{who}_key"], files[f"{who}_pem"] = _write(
            folder, who, key, _certificate(who, key, "Test Hospital CA", ca_key, ca=False))
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = _certificate("stranger", stranger_key, "stranger", stranger_key, ca=False)
    files["stranger_key"], files["stranger_pem"] = _write(folder, "stranger", stranger_key,
                                                          stranger)
    return files
