"""Careful HTTP for the web backends: timeouts, retries with backoff, a rate limit, a body-size cap,
refusal of private targets (also behind redirects and DNS answers), and secrets kept out of every message.

Two kinds of request:
  ``api``    to an endpoint the user configured (SerpAPI, SearXNG, an LLM server): trusted, may be on
             a private network, no redirects followed;
  ``fetch``  to a URL that came from a search result (a page, a thumbnail): only public http(s) targets,
             each redirect hop checked again, loopback only when ``allow_loopback`` is set (for tests).

The target check resolves the host and refuses when any of its addresses is private, loopback, link-local,
multicast, reserved or unspecified; the request then connects to the checked address itself (Host header
and TLS SNI keep the original name), so a DNS server that answers differently a moment later (DNS
rebinding) cannot steer the connection elsewhere.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable
from urllib.parse import urljoin, urlsplit

from mmsearch_r1.errors import ConfigError, ToolBadResponse, ToolError, ToolRateLimited, ToolRefusedTarget, ToolTimeout

if TYPE_CHECKING:
    from mmsearch_r1.tools.config import WebConfig

log = logging.getLogger("mmsearch_r1.tools.web")
REDACTED = "[redacted]"
Resolver = Callable[[str], list[str]]


# --- secrets -------------------------------------------------------------------------------------


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by ``[redacted]``.

    >>> redact("GET /search?api_key=abc123&q=x failed", ["abc123", ""])
    'GET /search?api_key=[redacted]&q=x failed'
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites log records so that no secret reaches a handler (installed on our and httpx's loggers)."""

    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = redact(record.getMessage(), self.secrets)
            record.args = ()
        return True


def secret_from_env(variable: str, what: str, required: bool = True) -> str:
    """The secret in environment variable ``variable``; a ``ConfigError`` naming it when required and unset."""
    value = os.environ.get(variable, "")
    if required and not value:
        raise ConfigError(f"environment variable {variable} is not set; export your {what} in it (it is never written to config files or logs).")
    if value:
        for name in ("mmsearch_r1.tools.web", "httpx", "httpcore"):
            logger = logging.getLogger(name)
            if not any(isinstance(f, RedactingFilter) and value in f.secrets for f in logger.filters):
                logger.addFilter(RedactingFilter([value]))
    return value


# --- rate limit and target checks ----------------------------------------------------------------


class RateLimiter:
    """At most ``rate`` calls per second, spaced evenly; thread-safe (waiting happens outside the lock)."""

    def __init__(self, rate_per_s: float):
        self.interval = 1.0 / rate_per_s
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Block until this call's slot; returns the seconds waited."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)
        return slot - now


def system_resolver(host: str) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        raise ToolBadResponse(f"the host {host} could not be resolved; check the URL or your DNS.") from None
    return sorted({info[4][0] for info in infos})


def address_allowed(address: str, allow_loopback: bool) -> bool:
    """True for a public unicast address, or a loopback one when ``allow_loopback``.

    >>> address_allowed("93.184.216.34", False), address_allowed("10.1.2.3", True), address_allowed("127.0.0.1", True)
    (True, False, True)
    >>> address_allowed("::ffff:192.168.0.1", False), address_allowed("169.254.169.254", False)
    (False, False)
    """
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_loopback
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_unspecified)


def check_target(url: str, allow_loopback: bool, resolver: Resolver = system_resolver) -> list[str]:
    """Raise ``ToolRefusedTarget`` unless ``url`` is http(s) and every address of its host is allowed;
    return those addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ToolRefusedTarget(f"refused to fetch a {parts.scheme or 'schemeless'} URL; only http and https are fetched.")
    host = parts.hostname
    if not host:
        raise ToolRefusedTarget("refused to fetch a URL without a host.")
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = resolver(host)
    for address in addresses:
        if not address_allowed(address, allow_loopback):
            raise ToolRefusedTarget(f"refused to fetch from {host}: it resolves to the non-public address {address}.")
    return addresses


def pinned_request(url: str, address: str) -> tuple[str, dict, dict]:
    """(url, headers, extensions) that connect to the checked ``address`` while naming the original host.

    The Host header keeps virtual hosting working and the ``sni_hostname`` extension keeps TLS SNI and
    certificate checks on the original name, so a second DNS answer cannot redirect the connection.
    ``Connection: close``: a pooled connection to this address, opened for another name, is never reused.

    >>> pinned_request("https://example.org:8443/a?b=1", "93.184.216.34")
    ('https://93.184.216.34:8443/a?b=1', {'Host': 'example.org:8443', 'Connection': 'close'}, {'sni_hostname': 'example.org'})
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    netloc = literal + (f":{parts.port}" if parts.port else "")
    headers = {"Host": host + (f":{parts.port}" if parts.port else ""), "Connection": "close"}
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return parts._replace(netloc=netloc).geturl(), headers, extensions


# --- the client ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """A finished response: status, headers that matter, and the (size-capped) body."""

    status: int
    content_type: str
    body: bytes
    url: str
    location: str = ""

    def json(self, what: str) -> Any:
        try:
            return json.loads(self.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ToolBadResponse(f"{what} answered with malformed JSON.") from None


REDIRECTS = (301, 302, 303, 307, 308)


class WebClient:
    """One backend's HTTP client: shared rate limit, retries with backoff, size cap, target checks."""

    def __init__(self, name: str, web: "WebConfig", secrets: Iterable[str] = (), resolver: Resolver = system_resolver, rate_limit_per_s: float | None = None):
        import httpx

        self.name, self.web, self.resolver = name, web, resolver
        self.secrets = [s for s in secrets if s]
        self.limiter = RateLimiter(rate_limit_per_s or web.rate_limit_per_s)
        self._client = httpx.Client(timeout=web.timeout_s, follow_redirects=False, headers={"User-Agent": "mmsearch-r1"})

    def close(self) -> None:
        self._client.close()

    def _fail(self, error_type: type[ToolError], message: str) -> ToolError:
        error = error_type(redact(f"{self.name}: {message}", self.secrets))
        log.warning("%s", error)
        return error

    def api(self, method: str, url: str, **kwargs: Any) -> Response:
        """A request to a configured endpoint (no target check, no redirects), with retries."""
        return self._with_retries(lambda: self._send(method, url, kwargs), url)

    def fetch(self, url: str) -> Response:
        """GET a URL from a search result: public targets only, every redirect hop checked, with retries."""
        return self._with_retries(lambda: self._follow(url), url)

    def _follow(self, url: str) -> Response:
        for _ in range(self.web.max_redirects + 1):
            addresses = check_target(url, self.web.allow_loopback, self.resolver)
            target, headers, extensions = pinned_request(url, addresses[0])
            response = self._send("GET", target, {"headers": headers, "extensions": extensions}, shown_url=url)
            if response.status not in REDIRECTS:
                return response
            if not response.location:
                raise self._fail(ToolBadResponse, f"a redirect from {urlsplit(url).hostname} had no Location header.")
            url = urljoin(url, response.location)
        raise self._fail(ToolBadResponse, f"more than {self.web.max_redirects} redirects; the page was not fetched.")

    def _with_retries(self, attempt: Callable[[], Response], url: str) -> Response:
        host = urlsplit(url).hostname or url
        delay = self.web.backoff_s
        for number in range(self.web.max_retries + 1):
            self.limiter.wait()
            outcome = self._attempt(attempt, host)
            if isinstance(outcome, Response):
                return outcome
            if number == self.web.max_retries or not getattr(outcome, "retryable", False):
                raise outcome
            time.sleep(min(delay, 30.0))
            delay *= 2
        raise AssertionError("unreachable")

    def _attempt(self, attempt: Callable[[], Response], host: str) -> Response | ToolError:
        import httpx

        try:
            response = attempt()
        except httpx.TimeoutException:
            return _retryable(self._fail(ToolTimeout, f"{host} did not answer within {self.web.timeout_s:g} s."))
        except httpx.HTTPError as error:
            return _retryable(self._fail(ToolBadResponse, f"could not reach {host} ({type(error).__name__})."))
        if response.status == 429:
            return _retryable(self._fail(ToolRateLimited, f"{host} refused the call with HTTP 429 (rate limit)."))
        if response.status >= 500:
            return _retryable(self._fail(ToolBadResponse, f"{host} failed with HTTP {response.status}."))
        if response.status >= 400:
            return self._fail(ToolBadResponse, f"{host} answered HTTP {response.status}.")
        return response

    def _send(self, method: str, url: str, kwargs: dict, shown_url: str | None = None) -> Response:
        """Send one request and read at most ``max_response_bytes`` of its body (``shown_url``: the URL
        to report, when ``url`` is its address-pinned form)."""
        limit = self.web.max_response_bytes
        shown = shown_url or url
        with self._client.stream(method, url, **kwargs) as response:
            if response.status_code in REDIRECTS:
                return Response(response.status_code, "", b"", shown, location=response.headers.get("location", ""))
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise self._fail(ToolBadResponse, f"the answer from {urlsplit(shown).hostname} is {declared} bytes, over the {limit}-byte cap.")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise self._fail(ToolBadResponse, f"the answer from {urlsplit(shown).hostname} exceeds the {limit}-byte cap.")
                chunks.append(chunk)
            return Response(response.status_code, response.headers.get("content-type", ""), b"".join(chunks), shown)


def _retryable(error: ToolError) -> ToolError:
    error.retryable = True  # type: ignore[attr-defined]
    return error
