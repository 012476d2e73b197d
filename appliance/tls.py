"""The HTTPS certificate: configured, or self-signed into INGOT_HOME on first start."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_NAME = "tls.crt"
KEY_NAME = "tls.key"


def ensure_certificate(home: Path, cert: Path | None, key: Path | None) -> tuple[Path, Path, bool]:
    """Return (cert, key, self_signed). Generates a self-signed pair under ``home/tls`` once."""
    if cert is not None or key is not None:
        if cert is None or key is None:
            raise ValueError("tls_cert and tls_key must be configured together")
        for path in (cert, key):
            if not path.is_file():
                raise FileNotFoundError(f"TLS file not found: {path}")
        return cert, key, False
    directory = home / "tls"
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    if not (cert_path.is_file() and key_path.is_file()):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_self_signed(cert_path, key_path)
    return cert_path, key_path, True


def _write_self_signed(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    hostname = socket.gethostname()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ingot appliance (self-signed)")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(hostname), x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    _atomic_write(key_path, key_bytes, 0o600)
    _atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    temp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, path)


def restrict_versions(context: ssl.SSLContext) -> None:
    """TLS 1.2 and 1.3 only: the HPE SDK speaks exactly 1.2, browsers prefer 1.3."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
