"""Fixtures for the gcp implementations: the Pub/Sub and Firestore emulators, and a Redis that
speaks like Memorystore (AUTH string + TLS with its own server CA).

Loaded through ``pytest_plugins`` in tests/conftest.py. Emulators start once per session (per xdist
worker) and only when a test asks for them; without gcloud or the emulator component the tests
that need them are skipped with the reason.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from farm_dagster.local_services import RedisStartError, start_redis_server
from tests import gcp_emulators
from tests.gcp_emulators import FIRESTORE, PUBSUB, EmulatorKind, RunningEmulator

_STARTED: list[RunningEmulator] = []


def _emulator(kind: EmulatorKind, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    reason = gcp_emulators.unavailable_reason(kind)
    if reason:
        pytest.skip(f"{kind.name} emulator unavailable: {reason}")
    running = gcp_emulators.start(kind, tmp_path_factory.mktemp(f"{kind.name}-emulator"))
    _STARTED.append(running)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    yield from _emulator(PUBSUB, tmp_path_factory)


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    yield from _emulator(FIRESTORE, tmp_path_factory)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report how long each emulator took to answer (a number for bench notes, not an assert)."""
    if _STARTED:
        timings = ", ".join(f"{e.kind.name} {e.ready_seconds:.1f} s" for e in _STARTED)
        terminalreporter.write_line(f"gcp emulators ready after: {timings}")


@dataclass(frozen=True)
class MemorystoreLike:
    url: str  # rediss://127.0.0.1:<port>/0
    auth_string: str
    server_ca_path: str


@pytest.fixture(scope="session")
def memorystore_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemorystoreLike]:
    """A real redis-server that, like a Memorystore instance, demands AUTH and TLS only."""
    workdir = tmp_path_factory.mktemp("memorystore")
    ca_path, cert_path, key_path = _make_certificates(workdir)
    auth = secrets.token_hex(16)
    port = gcp_emulators.free_port()
    client = redis.Redis(host="127.0.0.1", port=port, password=auth, ssl=True, ssl_ca_certs=str(ca_path))
    tls_args = [
        "--port", "0",
        "--tls-port", str(port),
        "--bind", "127.0.0.1",
        "--tls-cert-file", str(cert_path),
        "--tls-key-file", str(key_path),
        "--tls-ca-cert-file", str(ca_path),
        "--tls-auth-clients", "no",
        "--requirepass", auth,
    ]  # fmt: skip
    try:
        proc = start_redis_server(workdir, tls_args, client)
    except RedisStartError as exc:
        pytest.fail(f"{exc} (is redis-server built with TLS?)")
    client.close()
    try:
        yield MemorystoreLike(f"rediss://127.0.0.1:{port}/0", auth, str(ca_path))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "farm test server CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "server-ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path
