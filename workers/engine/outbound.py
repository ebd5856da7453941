"""The one guarded HTTP client for user-given URLs (teachers, judges, "Test teacher"). No Django.

Anyone who can create an organisation can type a URL, and the web host and the workers then call
it. So, unless an operator allows it (`OutboundPolicy.allow`: CIDRs and host names):

- the host is resolved at connect time, every address it resolves to is checked, and the socket is
  opened to the checked address itself (the network backend under httpx does both), so a DNS
  answer that changes between the check and the connection (rebinding) cannot slip through;
- loopback, private, shared, link-local (cloud metadata), multicast, unspecified and reserved
  addresses are refused, also when they hide in IPv4-mapped, 6to4, Teredo or NAT64 IPv6 forms or
  in integer/hex/octal IPv4 spellings; a few metadata host names are refused by name;
- URLs with user info (`http://user:pw@host/`) and schemes other than http(s) are refused;
- redirects are never followed (the `Location` header is dropped) and the body of any answer that
  is not a success is replaced by its status, reason phrase and at most a short error code, so a
  foreign service's response never reaches a user through an error message.

`check_url(url, policy)` applies the same rules when a URL is saved; `sync_client(policy)` and
`async_client(policy)` are what the `openai` clients get as `http_client=`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import httpcore2
import httpx2

ENV_ALLOW = "DISTILLERY_OUTBOUND_ALLOW"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names that reach the cloud metadata service without looking like an address.
BLOCKED_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data"}
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT, not global
# Answers that are not a success are read up to this many bytes, only to find a short error code.
_ERROR_BODY_LIMIT = 64 * 1024
_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class OutboundRefused(httpcore2.ConnectError):
    """A URL or address the policy does not allow. The message is safe to show to users.

    A connection error to httpx, so the `openai` client reports it as `APIConnectionError` (its
    `__cause__` chain ends here) and callers' error handling needs nothing new.
    """


class UnresolvableHost(httpcore2.ConnectError):
    """The resolver has no address for the host (here, now)."""


@dataclass(frozen=True)
class OutboundPolicy:
    """What the operator allows beyond the public internet: networks and host names."""

    networks: tuple[IPNetwork, ...] = ()
    names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, allow: Iterable[str]) -> OutboundPolicy:
        """From entries such as `127.0.0.0/8`, `::1`, `vllm.lan` or `.corp.example` (a suffix)."""
        networks: list[IPNetwork] = []
        names: list[str] = []
        for raw in allow:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.append(entry.lower().rstrip("."))
        return cls(networks=tuple(networks), names=tuple(names))

    @classmethod
    def from_env(cls) -> OutboundPolicy:
        """The policy in DISTILLERY_OUTBOUND_ALLOW, for callers that were given none."""
        return cls.parse(os.environ.get(ENV_ALLOW, "").split(","))

    def allows_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(
            host == name or (name.startswith(".") and host.endswith(name)) for name in self.names
        )

    def allows_address(self, address: IPAddress) -> bool:
        return any(
            address in network for network in self.networks if network.version == address.version
        )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to (mapped, 6to4, Teredo, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return _is_public(embedded)
        if address.scope_id:
            return False
    elif address in _SHARED:
        return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
    )


def check_address(address: str | IPAddress, policy: OutboundPolicy) -> None:
    """Raise OutboundRefused unless the address is public or allowed by the policy."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            candidates.append(embedded)
    if policy.allows_address(ip) or (
        len(candidates) > 1 and all(policy.allows_address(c) for c in candidates[1:])
    ):
        return
    if not _is_public(ip):
        raise OutboundRefused(
            f"{ip} is not a public address (loopback, private, link-local or reserved); "
            f"an operator can allow it with {ENV_ALLOW}."
        )


def numeric_host(host: str) -> IPAddress | None:
    """The address a host spells as a number (`10.0.0.1`, `::1`, `2852039166`, `0xA9FEA9FE`,
    `0251.0376.0251.0376`), parsed the way the C resolver would; None for a name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if not re.fullmatch(r"[0-9a-fA-FxX.]+", host) or not host[0].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def resolve(host: str, port: int) -> list[str]:
    """Every address the host resolves to (numbers first, the resolver otherwise)."""
    numeric = numeric_host(host)
    if numeric is not None:
        return [str(numeric)]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(f"Could not resolve {host}.") from exc
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]
        if text not in addresses:
            addresses.append(text)
    return addresses


def checked_addresses(host: str, port: int, policy: OutboundPolicy) -> list[str]:
    """The addresses to connect to; OutboundRefused if the name or any one address is refused.

    Every address must pass, not just the first: a resolver answer can be reordered, and a
    client that falls back to the next address would otherwise reach the refused one.
    """
    host = host.strip("[]")
    if policy.allows_name(host):
        return resolve(host, port)
    if host.lower().rstrip(".") in BLOCKED_NAMES:
        raise OutboundRefused(f"The host {host} is not allowed.")
    addresses = resolve(host, port)
    for address in addresses:
        check_address(address, policy)
    return addresses


def check_url(url: str, policy: OutboundPolicy, *, resolve_names: bool = True) -> None:
    """The same rules as at connect time, for a URL about to be saved. Raises OutboundRefused.

    A name that does not resolve now is accepted (it may only resolve where the workers run);
    the connect-time check still applies to whatever it resolves to later.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise OutboundRefused("The URL cannot be parsed.") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise OutboundRefused("Use an http:// or https:// URL with a host name.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise OutboundRefused("Put credentials in the API key field, not in the URL.")
    if policy.allows_name(host):
        return
    if host.lower().rstrip(".") in BLOCKED_NAMES:
        raise OutboundRefused(f"The host {host} is not allowed.")
    numeric = numeric_host(host)
    if numeric is not None:
        check_address(numeric, policy)
        return
    if not resolve_names:
        return
    try:
        checked_addresses(host, port, policy)
    except UnresolvableHost:
        return


def _first_connected(addresses: Sequence[str], connect: Any) -> Any:
    last: Exception | None = None
    for address in addresses:
        try:
            return connect(address)
        except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
            last = exc
    assert last is not None  # resolve() never returns an empty list without raising
    raise last


class GuardedBackend(httpcore2.NetworkBackend):
    """Resolves, checks every address, then connects to a checked address (TLS still verifies
    the host name: httpcore passes the URL's host as SNI and for the certificate check)."""

    def __init__(self, policy: OutboundPolicy, inner: httpcore2.NetworkBackend | None = None):
        self.policy = policy
        self.inner = inner or httpcore2.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        addresses = checked_addresses(host, port, self.policy)
        return _first_connected(
            addresses,
            lambda address: self.inner.connect_tcp(
                address, port, timeout, local_address, socket_options
            ),
        )

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore2.NetworkStream:
        raise OutboundRefused("Unix sockets are not allowed.")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class AsyncGuardedBackend(httpcore2.AsyncNetworkBackend):
    def __init__(
        self, policy: OutboundPolicy, inner: httpcore2.AsyncNetworkBackend | None = None
    ) -> None:
        self.policy = policy
        self.inner = inner or httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        import anyio.to_thread

        # The resolver blocks; a thread keeps the event loop (and the other requests) moving.
        addresses = await anyio.to_thread.run_sync(checked_addresses, host, port, self.policy)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore2.AsyncNetworkStream:
        raise OutboundRefused("Unix sockets are not allowed.")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def short_reason(status: int, body: bytes, content_type: str) -> str:
    """`<status> <reason phrase>` plus at most an error code from an OpenAI-style JSON body."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown status"
    reason = f"{status} {phrase}"
    if 300 <= status < 400:
        return f"{reason}: the endpoint redirects, and redirects are not followed"
    code = ""
    if "json" in content_type:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            for key in ("code", "type"):
                value = error.get(key)
                if isinstance(value, str) and _CODE.fullmatch(value):
                    code = value
                    break
    return f"{reason} ({code})" if code else reason


def _sanitised_headers(response: httpx2.Response) -> list[tuple[str, str]]:
    # Keep what the client needs (Retry-After, rate-limit headers); drop Location so nothing can
    # follow a redirect, and the framing of the body that is being replaced.
    dropped = {
        "location",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "content-type",
    }
    return [(k, v) for k, v in response.headers.multi_items() if k.lower() not in dropped]


def _replacement(
    request: httpx2.Request, response: httpx2.Response, body: bytes
) -> httpx2.Response:
    reason = short_reason(
        response.status_code, body, response.headers.get("content-type", "").lower()
    )
    payload = {"error": {"message": reason, "type": "upstream_error"}}
    return httpx2.Response(
        status_code=response.status_code,
        headers=[*_sanitised_headers(response), ("content-type", "application/json")],
        content=json.dumps(payload).encode(),
        request=request,
        extensions={k: v for k, v in response.extensions.items() if k != "network_stream"},
    )


def _read_capped(chunks: Iterator[bytes]) -> bytes:
    body = b""
    for chunk in chunks:
        body += chunk
        if len(body) >= _ERROR_BODY_LIMIT:
            break
    return body[:_ERROR_BODY_LIMIT]


def _pool_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    # httpx builds its pool without a way to pass a network backend, so the transports build
    # their own with the same options.
    limits: httpx2.Limits = kwargs.get("limits") or httpx2.Limits()
    return {
        "ssl_context": httpx2.create_ssl_context(
            verify=kwargs.get("verify", True), trust_env=False
        ),
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
        "http1": kwargs.get("http1", True),
        "http2": kwargs.get("http2", False),
    }


class GuardedTransport(httpx2.HTTPTransport):
    def __init__(self, policy: OutboundPolicy, **kwargs: Any) -> None:
        kwargs.setdefault("trust_env", False)  # a proxy from the environment would skip the check
        super().__init__(**kwargs)
        self._pool = httpcore2.ConnectionPool(
            network_backend=GuardedBackend(policy), **_pool_options(kwargs)
        )

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        _refuse_userinfo(request)
        response = super().handle_request(request)
        if response.status_code < 300:
            return response
        try:
            body = _read_capped(response.iter_raw())
        finally:
            response.close()
        return _replacement(request, response, body)


class AsyncGuardedTransport(httpx2.AsyncHTTPTransport):
    def __init__(self, policy: OutboundPolicy, **kwargs: Any) -> None:
        kwargs.setdefault("trust_env", False)
        super().__init__(**kwargs)
        self._pool = httpcore2.AsyncConnectionPool(
            network_backend=AsyncGuardedBackend(policy), **_pool_options(kwargs)
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        _refuse_userinfo(request)
        response = await super().handle_async_request(request)
        if response.status_code < 300:
            return response
        body = b""
        try:
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) >= _ERROR_BODY_LIMIT:
                    break
        finally:
            await response.aclose()
        return _replacement(request, response, body[:_ERROR_BODY_LIMIT])


def _refuse_userinfo(request: httpx2.Request) -> None:
    if request.url.userinfo:
        refused = OutboundRefused("Put credentials in the API key field, not in the URL.")
        raise httpx2.ConnectError(str(refused), request=request) from refused


def sync_client(
    policy: OutboundPolicy | None = None,
    *,
    timeout: float | httpx2.Timeout = 60.0,
    limits: httpx2.Limits | None = None,
) -> httpx2.Client:
    """An httpx client that only reaches what `policy` allows (None: DISTILLERY_OUTBOUND_ALLOW)."""
    policy = policy if policy is not None else OutboundPolicy.from_env()
    limits = limits or httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
    return httpx2.Client(
        transport=GuardedTransport(policy, limits=limits),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )


def async_client(
    policy: OutboundPolicy | None = None,
    *,
    timeout: float | httpx2.Timeout = 60.0,
    limits: httpx2.Limits | None = None,
) -> httpx2.AsyncClient:
    """The asyncio twin of `sync_client`."""
    policy = policy if policy is not None else OutboundPolicy.from_env()
    limits = limits or httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
    return httpx2.AsyncClient(
        transport=AsyncGuardedTransport(policy, limits=limits),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )
