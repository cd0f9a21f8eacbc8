"""Who may use the server: the names it answers to (the Host check) and its API key. Plain Python, no web
framework: app.py's gate applies these rules before any route runs.

The Host check stops DNS rebinding: a web page elsewhere (evil.example) can make its own name resolve to
127.0.0.1, and the browser then lets that page talk to a server on this machine, but the browser still sends
`Host: evil.example`. So a request is answered only when its Host is an IP address (a browser sends one only
for a page loaded from that very address), one of the loopback names, the name the server listens on, or a
name its operator allowed; anything else is refused (as Jupyter's server does).

The API key is a shared secret, sent as OpenAI's clients send theirs (`Authorization: Bearer KEY`, as vLLM and
llama.cpp's server expect it), compared in constant time.
"""
from __future__ import annotations

import hmac
import ipaddress
from typing import Iterable

from tinygpt.config import SettingText

LOCAL_NAMES = ("localhost",)  # loopback addresses (127.0.0.1, ::1) are IP addresses, always answered
ANY_HOST = "*"  # an allowed name meaning every name (behind a proxy that checks names itself)


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the server on this machine: is_loopback("127.0.0.1") is True."""
    if host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a Host header, without its port or an IPv6 address's brackets, lower case:
    host_name("[::1]:8000") == "::1", host_name("LocalHost:80") == "localhost"."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        host = host.split(":")[0]
    return host.rstrip(".")  # "localhost." is localhost


def server_names(allowed: Iterable[str] = ()) -> frozenset[str]:
    """The names a server answers to: localhost and the names allowed (the host it listens on, if given by name,
    and whatever its operator adds): server_names(["Box.lan:80"]) == {"localhost", "box.lan"}."""
    return frozenset({*LOCAL_NAMES, *(host_name(a) for a in allowed if a)})


def host_allowed(header: str | None, names: frozenset[str]) -> bool:
    """Whether a request with this Host header is answered: an IP address, or one of `names` (ANY_HOST: all)."""
    if ANY_HOST in names:
        return True
    if not header:
        return False
    host = host_name(header)
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host in names


def host_refusal(header: str | None, names: frozenset[str]) -> SettingText:
    """Why a request's Host is refused, in one line."""
    what = f"the name {host_name(header)!r}" if header else "a request without a Host header"
    return SettingText(f"this server does not answer to {what}: it answers to its IP addresses and "
                       f"{', '.join(sorted(names))} (its operator can add names with `allowed_host`)", "allowed_host")


def key_matches(authorization: str | None, key: str) -> bool:
    """Whether an Authorization header carries the key as a Bearer token, compared in constant time."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def key_refusal(authorization: str | None) -> str:
    """Why a request without the right key is refused, in OpenAI's words, in one line."""
    if not authorization:
        return ("this server needs an API key: send it in the Authorization header as 'Bearer KEY' (OpenAI's "
                "clients do this with their api_key)")
    return "the API key given is not this server's (it was sent in the Authorization header)"


__all__ = ["LOCAL_NAMES", "ANY_HOST", "is_loopback", "host_name", "server_names", "host_allowed", "host_refusal", "key_matches",
           "key_refusal"]
