"""A self-signed certificate for the LAN, so phones can use the microphone (browsers demand HTTPS).

The certificate names localhost, 127.0.0.1 and every LAN address of this machine. When the set of
addresses changes (new Wi-Fi, new DHCP lease) the certificate no longer matches the URL the user
opens, so it is made again.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from convers.private_files import private_dir

log = logging.getLogger(__name__)

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
# Browsers cap leaf certificate lifetime; 397 days is the longest Safari and Chrome accept.
VALIDITY_DAYS = 397
# Made again this long before expiry, so a long-running install never serves an expired one.
RENEW_BEFORE_DAYS = 30
# Linux ioctl that reads an interface's IPv4 address.
_SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class CertificatePaths:
    """Where the certificate and its private key live."""

    cert: Path
    key: Path


def lan_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses, sorted; empty when there is no network."""
    found: set[str] = set()
    found.update(_route_address())
    found.update(_interface_addresses())
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(str(info[4][0]))
    except OSError:
        pass
    usable = []
    for text in found:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if not (address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast):
            usable.append(text)
    return sorted(usable, key=lambda a: ipaddress.ip_address(a))


def _route_address() -> list[str]:
    # Connecting a UDP socket sends nothing; it only asks the kernel which source address it would use.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.254.254.254", 1))
            return [probe.getsockname()[0]]
        except OSError:
            return []


def _interface_addresses() -> list[str]:
    addresses = []
    try:
        interfaces = socket.if_nameindex()
    except OSError:
        return []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in interfaces:
            try:
                packed = struct.pack("256s", name.encode()[:15])
                result = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, packed)
                addresses.append(socket.inet_ntoa(result[20:24]))
            except OSError:
                continue  # interface without an IPv4 address
    return addresses


def wanted_names(extra_hosts: Iterable[str] = ()) -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses) the certificate must cover."""
    dns = {"localhost"}
    ips = {"127.0.0.1", *lan_addresses()}
    for host in extra_hosts:
        if not host or host in {"0.0.0.0", "::"}:
            continue
        try:
            ips.add(str(ipaddress.ip_address(host)))
        except ValueError:
            dns.add(host)
    return dns, ips


def certificate_names(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses) in a certificate's subjectAltName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    dns = set(san.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return dns, ips


def ensure_certificate(tls_dir: Path, extra_hosts: Iterable[str] = (), now: datetime.datetime | None = None) -> CertificatePaths:
    """The certificate in `tls_dir`, made (again) when missing, unreadable, expiring or naming other addresses."""
    now = now or datetime.datetime.now(datetime.UTC)
    paths = CertificatePaths(tls_dir / CERT_FILE, tls_dir / KEY_FILE)
    dns, ips = wanted_names(extra_hosts)
    reason = _why_remake(paths, dns, ips, now)
    if reason is None:
        return paths
    log.info("making a self-signed certificate in %s (%s)", tls_dir, reason)
    write_certificate(paths, dns, ips, now)
    return paths


def _why_remake(paths: CertificatePaths, dns: set[str], ips: set[str], now: datetime.datetime) -> str | None:
    if not paths.cert.is_file() or not paths.key.is_file():
        return "none yet"
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    except (ValueError, OSError) as error:
        return f"the old one is unreadable: {error}"
    if cert.not_valid_after_utc - now < datetime.timedelta(days=RENEW_BEFORE_DAYS):
        return "the old one expires soon"
    if certificate_names(cert) != (dns, ips):
        return f"the addresses changed to {sorted(ips)}"
    return None


def write_certificate(paths: CertificatePaths, dns: set[str], ips: set[str], now: datetime.datetime) -> None:
    """Writes a fresh P-256 key (mode 0600) and a self-signed certificate naming `dns` and `ips`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "convers local server")])
    san = [x509.DNSName(d) for d in sorted(dns)] + [
        x509.IPAddress(ipaddress.ip_address(ip)) for ip in sorted(ips, key=ipaddress.ip_address)
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=True, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        # Python 3.13's strict verification wants both key identifiers, even on a self-signed leaf.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    private_dir(paths.cert.parent)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(paths.key, key_bytes)
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start: a key briefly world-readable is a leaked key.
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def check_user_certificate(cert: Path, key: Path) -> CertificatePaths:
    """The user's own certificate, after checking both files exist and parse."""
    for label, path in (("certificate", cert), ("key", key)):
        if not path.expanduser().is_file():
            raise ValueError(f"TLS {label} file {path} does not exist: pass an existing PEM file to --cert/--key")
    cert, key = cert.expanduser(), key.expanduser()
    try:
        x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError as error:
        raise ValueError(f"TLS certificate {cert} is not a PEM certificate: {error}") from None
    return CertificatePaths(cert, key)
