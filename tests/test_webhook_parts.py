"""The parts of webhook delivery that need no workflow: URL checks, secrets, signing, the capped answer."""

import asyncio
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook

from core.crypto import SecretKeyMissing, SecretUnreadable, decrypt_secret, encrypt_secret, new_signing_secret
from core.errors import UnknownEventType
from core.events import EVENT_TYPES
from core.webhook_sender import RESPONSE_BYTES, new_http_client, parse_retry_after, send_signed, sign_headers
from core.webhook_urls import UnresolvableHost, UnsafeWebhookUrl, resolve_webhook_url, resolve_webhook_url_async
from core.webhooks import check_event_types

REFUSED = [
    ("https://127.0.0.1/hook", "loopback"),
    ("https://localhost:8443/hook", "loopback"),
    ("https://10.1.2.3/hook", "private"),
    ("https://192.168.0.10/hook", "private"),
    ("https://172.16.5.5/hook", "private"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("https://[::1]/hook", "loopback"),
    ("https://[fe80::1]/hook", "link-local"),
    ("https://[fd00::1]/hook", "private"),
    ("https://[::ffff:127.0.0.1]/hook", "loopback"),
    ("https://224.0.0.1/hook", "multicast"),
    ("https://0.0.0.0/hook", "unspecified"),
    ("https://240.0.0.1/hook", "reserved"),
    ("https://100.64.0.1/hook", "non-public"),
]


@pytest.mark.parametrize(("url", "why"), REFUSED)
def test_private_targets_are_refused_by_default(url: str, why: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match=f"{why} address; webhooks may only reach public addresses"):
        resolve_webhook_url(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://93.184.216.34/hook", "must use https"),
        ("ftp://93.184.216.34/hook", "must start with https://"),
        ("https:///nohost", "has no host"),
        ("https://user:pw@93.184.216.34/hook", "must not carry credentials"),
        ("https://93.184.216.34/hook#frag", "must not have a #fragment"),
        ("https://93.184.216.34:99999/hook", "not a valid URL"),
        ("https://" + "a" * 2100 + ".example/", "longer than 2048"),
    ],
)
def test_malformed_or_plain_http_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match=message):
        resolve_webhook_url(url, allow_private=False)


def test_a_host_that_does_not_resolve_is_refused() -> None:
    # A name that fails before any DNS query is sent (a label over 63 characters): tests ask no resolver.
    with pytest.raises(UnresolvableHost, match="does not resolve"):
        resolve_webhook_url(f"https://{'a' * 64}.example/hook", allow_private=False)


def test_a_public_address_passes_and_is_pinned() -> None:
    target = resolve_webhook_url("https://93.184.216.34:8443/a/b?c=1", allow_private=False)
    assert (target.address, target.port, target.host_header) == ("93.184.216.34", 8443, "93.184.216.34:8443")
    assert target.pinned_url() == "https://93.184.216.34:8443/a/b?c=1"


async def test_allowing_private_urls_admits_them_and_plain_http_to_them_only() -> None:
    target = await resolve_webhook_url_async("http://localhost:9000/hook", allow_private=True)
    assert target.address in ("127.0.0.1", "::1") and target.host_header == "localhost:9000"
    assert target.pinned_url().endswith(":9000/hook") and "localhost" not in target.pinned_url()
    with pytest.raises(UnsafeWebhookUrl, match="must use https"):
        await resolve_webhook_url_async("http://93.184.216.34/hook", allow_private=True)
    with pytest.raises(UnsafeWebhookUrl, match="loopback"):
        await resolve_webhook_url_async("http://localhost:9000/hook", allow_private=False)


def test_event_types_are_checked() -> None:
    assert check_event_types(["case.assigned", "case.assigned", "agent.removed"]) == ["case.assigned", "agent.removed"]
    with pytest.raises(UnknownEventType, match=r"unknown event types \['case.exploded'\]"):
        check_event_types(["case.assigned", "case.exploded"])
    assert "webhook.disabled" in EVENT_TYPES and "webhook.test" not in EVENT_TYPES


def test_secrets_are_sealed_with_a_key_from_secret_key() -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_") and len(Webhook(secret)._whsecret) == 32
    sealed = encrypt_secret(secret, secret_key="k" * 40)
    assert secret not in sealed and secret[6:] not in sealed
    assert encrypt_secret(secret, secret_key="k" * 40) != sealed, "a fresh nonce each time"
    assert decrypt_secret(sealed, secret_key="k" * 40) == secret
    with pytest.raises(SecretUnreadable):
        decrypt_secret(sealed, secret_key="other" * 10)
    with pytest.raises(SecretKeyMissing):
        encrypt_secret(secret, secret_key="")


def test_signatures_verify_with_standardwebhooks() -> None:
    secret = new_signing_secret()
    payload = '{"id":"42","type":"case.assigned","at":"2026-01-01T00:00:00+00:00","data":{}}'
    headers = sign_headers(secret=secret, msg_id="42", payload=payload, at=datetime.now(UTC))
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(payload, headers)["id"] == "42"
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(new_signing_secret()).verify(payload, headers)


def test_retry_after_reads_seconds_and_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


async def test_a_huge_endless_answer_is_cut_and_the_status_kept() -> None:
    """A receiver that answers 200 and then streams forever: we read 64 KB, keep the 200, and move on."""
    sent = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b"x" * 16384
        try:
            while True:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                await writer.drain()
        except ConnectionError:
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = await resolve_webhook_url_async(f"http://127.0.0.1:{port}/h", allow_private=True)
    started = time.monotonic()
    async with new_http_client(5) as client:
        outcome = await send_signed(
            client, target, secret=new_signing_secret(), msg_id="1", payload="{}", timeout_seconds=5
        )
    server.close()
    assert outcome.succeeded and outcome.status == 200
    assert time.monotonic() - started < 4
    assert sent < RESPONSE_BYTES * 64, "we stopped reading; the receiver did not get to push megabytes"


async def test_no_redirect_is_followed() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://10.0.0.1/\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = await resolve_webhook_url_async(f"http://127.0.0.1:{port}/h", allow_private=True)
    async with new_http_client(5) as client:
        outcome = await send_signed(
            client, target, secret=new_signing_secret(), msg_id="1", payload="{}", timeout_seconds=5
        )
    server.close()
    assert not outcome.succeeded and outcome.status == 307 and outcome.error == "answered 307"


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for the name `localhost` only (not for 127.0.0.1), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_https_goes_to_the_checked_address_with_the_hosts_name_for_tls_and_host(tmp_path: Path) -> None:
    """The request connects to the address the check resolved (127.0.0.1), yet TLS verifies the certificate
    for the URL's host name (SNI) and the receiver sees that name in Host: DNS is not asked twice."""
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    seen: dict[str, str] = {}

    def note_sni(_: object, server_name: str | None, __: object) -> None:
        seen["sni"] = server_name or ""

    server_tls.sni_callback = note_sni

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"host:"):
                seen["host"] = line.decode().split(":", 1)[1].strip()
        writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    target = await resolve_webhook_url_async(f"https://localhost:{port}/hook", allow_private=True)
    assert target.pinned_url() == f"https://{target.address}:{port}/hook"
    client_tls = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(verify=client_tls, trust_env=False, follow_redirects=False) as client:
        outcome = await send_signed(
            client, target, secret=new_signing_secret(), msg_id="7", payload="{}", timeout_seconds=5
        )
    server.close()
    if target.address != "127.0.0.1":
        pytest.skip("localhost resolves to ::1 first here; the server listens on 127.0.0.1")
    assert outcome.status == 204, outcome.error
    assert seen == {"sni": "localhost", "host": f"localhost:{port}"}
