"""
Throwaway certificates for the TLS tests, made with the C{cryptography}
package: a certificate authority, a server certificate for C{localhost} and
C{127.0.0.1}, a client certificate, a certificate for the wrong name, a
self-signed server certificate, and a second authority with a client
certificate of its own.

Keys are ECDSA P-256, which take a millisecond each to generate. The set is
made once per process (L{certificates}) and its PEM files are written to a
temporary directory that is removed when the process exits, because Twisted's
endpoint strings (C{ssl:}, C{tls:}) take file names.
"""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import shutil
import tempfile
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.ssl import Certificate, PrivateCertificate

_ONE_DAY = datetime.timedelta(days=1)


@attrs.frozen
class Issued:
    """
    A certificate and its private key, in memory and as PEM files.

    @ivar certificate: The certificate.
    @ivar key: Its private key.
    @ivar cert_path: The PEM file holding the certificate alone.
    @ivar key_path: The PEM file holding the private key alone.
    @ivar combined_path: The PEM file holding the key and then the
        certificate (what C{ssl:}'s C{privateKey=} accepts alone).
    """

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path
    combined_path: Path

    def cert_pem(self) -> bytes:
        """
        @return: The certificate in PEM form.
        """
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """
        @return: The private key in PEM form (PKCS#8, unencrypted).
        """
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def twisted_certificate(self) -> Certificate:
        """
        @return: The certificate as Twisted's L{Certificate} (a trust root).
        """
        return Certificate.loadPEM(self.cert_pem())

    def private_certificate(self) -> PrivateCertificate:
        """
        @return: The certificate and key as Twisted's L{PrivateCertificate}.
        """
        return PrivateCertificate.loadPEM(self.key_pem() + self.cert_pem())


@attrs.frozen
class CertificateSet:
    """
    Everything the TLS tests need, issued under two unrelated authorities.

    @ivar directory: Where the PEM files are.
    @ivar ca: The authority that signs C{server}, C{client} and
        C{wrong_name}.
    @ivar ca_dir: A directory holding only C{ca}'s certificate (for the
        C{tls:} endpoint's C{trustRoots=}).
    @ivar server: For C{localhost} and C{127.0.0.1}, signed by C{ca}.
    @ivar client: A client certificate (CN C{alice}, SAN
        C{alice.clients.test}), signed by C{ca}.
    @ivar wrong_name: A server certificate for C{wrong.example}, signed by
        C{ca}.
    @ivar self_signed: A server certificate for C{localhost} that signs
        itself.
    @ivar other_ca: An unrelated authority.
    @ivar other_ca_dir: A directory holding only C{other_ca}'s certificate.
    @ivar other_client: A client certificate (CN C{mallory}) signed by
        C{other_ca}.
    """

    directory: Path
    ca: Issued
    ca_dir: Path
    server: Issued
    client: Issued
    wrong_name: Issued
    self_signed: Issued
    other_ca: Issued
    other_ca_dir: Path
    other_client: Issued


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "txstateproto tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _issue(
    directory: Path,
    stem: str,
    common_name: str,
    issuer: Issued | None,
    *,
    is_ca: bool = False,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    client: bool = False,
) -> Issued:
    """
    Make a key and a certificate (signed by C{issuer}, or by itself), and
    write both as PEM files named after C{stem}.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _ONE_DAY)
        .not_valid_after(now + 30 * _ONE_DAY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = (
            ExtendedKeyUsageOID.CLIENT_AUTH
            if client
            else (ExtendedKeyUsageOID.SERVER_AUTH)
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=False
        )
    signer = issuer.key if issuer else key
    certificate = builder.sign(signer, hashes.SHA256())
    issued = Issued(
        certificate=certificate,
        key=key,
        cert_path=directory / f"{stem}.crt.pem",
        key_path=directory / f"{stem}.key.pem",
        combined_path=directory / f"{stem}.pem",
    )
    issued.cert_path.write_bytes(issued.cert_pem())
    issued.key_path.write_bytes(issued.key_pem())
    issued.combined_path.write_bytes(issued.key_pem() + issued.cert_pem())
    return issued


def make_certificates(directory: Path) -> CertificateSet:
    """
    Issue the whole set into C{directory}.

    @param directory: An existing, empty directory.
    @return: The certificates and the paths of their PEM files.
    """
    ca = _issue(directory, "ca", "txstateproto test CA", None, is_ca=True)
    ca_dir = directory / "trust"
    ca_dir.mkdir()
    shutil.copy(ca.cert_path, ca_dir / "ca.pem")
    other_ca = _issue(directory, "other-ca", "unrelated CA", None, is_ca=True)
    other_ca_dir = directory / "other-trust"
    other_ca_dir.mkdir()
    shutil.copy(other_ca.cert_path, other_ca_dir / "other-ca.pem")
    return CertificateSet(
        directory=directory,
        ca=ca,
        ca_dir=ca_dir,
        server=_issue(
            directory,
            "server",
            "localhost",
            ca,
            dns_names=("localhost",),
            ip_addresses=("127.0.0.1", "::1"),
        ),
        client=_issue(
            directory,
            "client",
            "alice",
            ca,
            dns_names=("alice.clients.test",),
            client=True,
        ),
        wrong_name=_issue(
            directory,
            "wrong-name",
            "wrong.example",
            ca,
            dns_names=("wrong.example",),
        ),
        self_signed=_issue(
            directory,
            "self-signed",
            "localhost",
            None,
            dns_names=("localhost",),
            ip_addresses=("127.0.0.1",),
        ),
        other_ca=other_ca,
        other_ca_dir=other_ca_dir,
        other_client=_issue(
            directory,
            "other-client",
            "mallory",
            other_ca,
            dns_names=("mallory.clients.test",),
            client=True,
        ),
    )


_made: CertificateSet | None = None


def certificates() -> CertificateSet:
    """
    Return the process-wide certificate set, issuing it on first use.

    Its directory is removed when the process exits.

    @return: The certificates.
    """
    global _made
    if _made is None:
        directory = Path(tempfile.mkdtemp(prefix="txstateproto-certs-"))
        atexit.register(shutil.rmtree, directory, True)
        _made = make_certificates(directory)
    return _made
