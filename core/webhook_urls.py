"""Where a webhook may point: `https`, and only to public addresses (every A/AAAA record checked).

Checked when an endpoint is registered or its URL changed, and again before every delivery, on the address
the request then connects to (the sender connects to exactly that address, keeping the Host header and the
TLS server name), so a DNS answer that changes after the check (rebinding) cannot steer a delivery inside.
`WEBHOOK_ALLOW_PRIVATE_URLS=true` lets private, loopback and link-local addresses through, and plain `http`
to them (local receivers, tests).
"""

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from core.errors import Invalid

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_LENGTH = 2048


class UnsafeWebhookUrl(Invalid):
    """The URL is malformed, not https, or resolves to an address a webhook may not reach."""


class UnresolvableHost(UnsafeWebhookUrl):
    """The URL's host has no address (now)."""


@dataclass(frozen=True)
class WebhookTarget:
    """A checked URL and the address a delivery connects to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    @property
    def host_header(self) -> str:
        """The Host header the receiver expects (the port only when not the scheme's default)."""
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address."""
        parts = urlsplit(self.url)
        address = f"[{self.address}]" if ":" in self.address else self.address
        return parts._replace(netloc=f"{address}:{self.port}").geturl()


def parse_webhook_url(url: str) -> SplitResult:
    """Split and check the URL's form: http(s), a host, no credentials, no fragment."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeWebhookUrl(f"url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a malformed port
    except ValueError as err:
        raise UnsafeWebhookUrl(f"url is not a valid URL: {err}") from None
    if parts.scheme not in ("https", "http"):
        raise UnsafeWebhookUrl("url must start with https://")
    if not parts.hostname:
        raise UnsafeWebhookUrl("url has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeWebhookUrl("url must not carry credentials (user:password@); authenticate by the signature")
    if parts.fragment:
        raise UnsafeWebhookUrl("url must not have a #fragment")
    return parts


def refusal(address: IPAddress) -> str | None:
    """Why a webhook may not reach this address, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for reason, hit in (
        ("a loopback", address.is_loopback),
        ("a link-local", address.is_link_local),
        ("a multicast", address.is_multicast),
        ("an unspecified", address.is_unspecified),
        ("a reserved", address.is_reserved),
        ("a private", address.is_private),
    ):
        if hit:
            return f"{reason} address"
    if not address.is_global:
        return "a non-public address"
    return None


def check_target(parts: SplitResult, addresses: list[str], *, allow_private: bool) -> WebhookTarget:
    """Refuse the URL unless every address is allowed; the target connects to the first one."""
    host = parts.hostname or ""
    if not addresses:
        raise UnresolvableHost(f"url host {host} has no address")
    refused = []
    for a in addresses:
        why = refusal(ipaddress.ip_address(a))
        if why is not None:
            refused.append(f"{a} is {why}")
    if refused and not allow_private:
        raise UnsafeWebhookUrl(
            f"url host {host} resolves to {'; '.join(refused)}; webhooks may only reach public addresses"
        )
    if parts.scheme != "https" and not (allow_private and len(refused) == len(addresses)):
        raise UnsafeWebhookUrl("url must use https (plain http only to private addresses, when they are allowed)")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return WebhookTarget(url=parts.geturl(), scheme=parts.scheme, host=host, port=port, address=addresses[0])


def _literal(host: str) -> list[str] | None:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return None


def _addresses(infos: Sequence[tuple[Any, Any, Any, Any, tuple[Any, ...]]]) -> list[str]:
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone
        if address not in seen:
            seen.append(address)
    return seen


def resolve_webhook_url(url: str, *, allow_private: bool) -> WebhookTarget:
    """Check a URL now (blocking DNS lookup): at registration and on every URL change."""
    parts = parse_webhook_url(url)
    host = parts.hostname or ""
    addresses = _literal(host)
    if addresses is None:
        try:
            addresses = _addresses(socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM))
        except (socket.gaierror, UnicodeError) as err:
            raise UnresolvableHost(f"url host {host} does not resolve: {err}") from None
    return check_target(parts, addresses, allow_private=allow_private)


async def resolve_webhook_url_async(url: str, *, allow_private: bool) -> WebhookTarget:
    """Check a URL without blocking the event loop: before every delivery."""
    parts = parse_webhook_url(url)
    host = parts.hostname or ""
    addresses = _literal(host)
    if addresses is None:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as err:
            raise UnresolvableHost(f"url host {host} does not resolve: {err}") from None
        addresses = _addresses(list(infos))
    return check_target(parts, addresses, allow_private=allow_private)
