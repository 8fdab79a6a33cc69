"""Certificates and keys of the dev cluster: one CA, serving certs, one client cert per identity.

ECDSA P-256 throughout: every component accepts it and generating a key takes
microseconds (RSA would add about a second to a cold ``up``). Files are kept in
``<state>/pki`` and reused; a leaf certificate close to expiry is re-issued.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from llmcanary_dev.devcluster.paths import Settings

__all__ = ["CertPair", "Identity", "Pki", "ensure_pki"]

log = logging.getLogger(__name__)

_CA_DAYS = 3650
_LEAF_DAYS = 365
_RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Identity:
    """A client identity: file stem, user name (CN) and groups (O)."""

    stem: str
    user: str
    groups: tuple[str, ...] = ()


ADMIN = Identity("admin", "llmcanary-admin", ("system:masters",))
CONTROLLER_MANAGER = Identity("kube-controller-manager", "system:kube-controller-manager")
SCHEDULER = Identity("kube-scheduler", "system:kube-scheduler")
KWOK = Identity("kwok", "kwok-controller")
ETCD_CLIENT = Identity("apiserver-etcd-client", "kube-apiserver-etcd-client")
#: The API server's identity towards the kubelets (KWOK's server here): ``kubectl logs``.
KUBELET_CLIENT = Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client")
#: CN of the API server's front-proxy client cert (``--requestheader-allowed-names``).
FRONT_PROXY_CLIENT = "front-proxy-client"
CLIENT_IDENTITIES: tuple[Identity, ...] = (
    ADMIN,
    CONTROLLER_MANAGER,
    SCHEDULER,
    KWOK,
    ETCD_CLIENT,
    KUBELET_CLIENT,
)


@dataclass(frozen=True)
class Pki:
    """Paths of everything :func:`ensure_pki` produced."""

    ca: CertPair
    apiserver: CertPair
    etcd: CertPair
    #: The aggregation layer's CA and the API server's client cert under it: the
    #: API server proxies to extension API servers with it, and the controller
    #: manager and scheduler read the CA (requestheader authentication).
    front_proxy_ca: CertPair
    front_proxy_client: CertPair
    #: Serving certs of the controller manager's and scheduler's health/metrics
    #: ports (otherwise they make up self-signed ones nobody can verify).
    controller_manager_serving: CertPair
    scheduler_serving: CertPair
    #: KWOK's server: the nodes' kubelet endpoint, which the API server verifies.
    kwok_serving: CertPair
    service_account_key: Path
    service_account_pub: Path
    clients: dict[str, CertPair]

    def client(self, identity: Identity) -> CertPair:
        return self.clients[identity.stem]


def _write(path: Path, data: bytes, *, private: bool) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an ECDSA key")
    return key


def _fresh(pair: CertPair) -> bool:
    if not (pair.cert.is_file() and pair.key.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    except ValueError:
        return False
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > _RENEW_BEFORE


def _name(common_name: str, groups: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _ensure_ca(
    pair: CertPair, common_name: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    """The CA, and whether it is new (then every leaf must be re-issued)."""
    if _fresh(pair):
        cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
        return cert, _load_key(pair.key), False
    log.info("generating CA %s in %s", common_name, pair.cert.parent)
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(pair.key, _key_pem(key), private=True)
    _write(pair.cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert, key, True


def _issue(
    pair: CertPair,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    subject: x509.Name,
    *,
    server: bool,
    client: bool,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    force: bool = False,
) -> None:
    if not force and _fresh(pair):
        return
    ca_cert, ca_key = ca
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if dns or ips:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(pair.key, _key_pem(key), private=True)
    _write(pair.cert, cert.public_bytes(serialization.Encoding.PEM), private=False)


def ensure_pki(settings: Settings) -> Pki:
    """Create (or reuse) the CA, serving and client certificates and the SA signing key."""
    d = settings.pki_dir
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)

    def pair(stem: str) -> CertPair:
        return CertPair(d / f"{stem}.crt", d / f"{stem}.key")

    pki = Pki(
        ca=pair("ca"),
        apiserver=pair("apiserver"),
        etcd=pair("etcd-server"),
        front_proxy_ca=pair("front-proxy-ca"),
        front_proxy_client=pair("front-proxy-client"),
        controller_manager_serving=pair("kube-controller-manager-serving"),
        scheduler_serving=pair("kube-scheduler-serving"),
        kwok_serving=pair("kwok-serving"),
        service_account_key=d / "sa.key",
        service_account_pub=d / "sa.pub",
        clients={i.stem: pair(i.stem) for i in CLIENT_IDENTITIES},
    )
    ca_cert, ca_key, force = _ensure_ca(pki.ca, "llmcanary-devcluster-ca")
    ca = (ca_cert, ca_key)
    fp_cert, fp_key, fp_force = _ensure_ca(
        pki.front_proxy_ca, "llmcanary-devcluster-front-proxy-ca"
    )
    _issue(
        pki.front_proxy_client,
        (fp_cert, fp_key),
        _name(FRONT_PROXY_CLIENT),
        server=False,
        client=True,
        force=fp_force,
    )
    loopback = ("localhost",)
    loopback_ips = tuple(dict.fromkeys((settings.host, "127.0.0.1", "::1")))
    _issue(
        pki.apiserver,
        ca,
        _name("kube-apiserver"),
        server=True,
        client=False,
        dns=(
            *loopback,
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ips=(*loopback_ips, settings.kubernetes_service_ip),
        force=force,
    )
    for serving, cn in (
        (pki.controller_manager_serving, "kube-controller-manager"),
        (pki.scheduler_serving, "kube-scheduler"),
        (pki.kwok_serving, "kwok"),
    ):
        _issue(
            serving, ca, _name(cn), server=True, client=False, dns=loopback, ips=loopback_ips,
            force=force,
        )  # fmt: skip
    # etcd uses one certificate to serve clients and to talk to its (only) peer.
    _issue(
        pki.etcd,
        ca,
        _name("etcd"),
        server=True,
        client=True,
        dns=loopback,
        ips=loopback_ips,
        force=force,
    )
    for ident in CLIENT_IDENTITIES:
        subject = _name(ident.user, ident.groups)
        _issue(pki.clients[ident.stem], ca, subject, server=False, client=True, force=force)

    if force or not (pki.service_account_key.is_file() and pki.service_account_pub.is_file()):
        sa = _new_key()
        _write(pki.service_account_key, _key_pem(sa), private=True)
        pub = sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _write(pki.service_account_pub, pub, private=False)
    return pki
