"""Turn HPE-style custom attributes into the checked, typed context the templates see.

Everything a template prints comes from here, already validated: host names are DNS labels,
MACs are MACs, addresses are addresses, and free text is one line without control characters.
Templates still quote every value for the format it lands in (shell, XML, YAML/JSON); this
module only guarantees that nothing malformed gets that far.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from plans.attributes import normalize_mac, parse_bool
from plans.render.passwords import SHA512_CRYPT_RE, sha512_crypt

__all__ = ["Nic", "RenderContext", "RenderError", "build_context"]


class RenderError(ValueError):
    """An answer file cannot be rendered: a bad or missing attribute, or an unknown kind/os."""


_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_NIC_KEY_RE = re.compile(r"NIC([1-9][0-9]{0,2})")
_LOCALE_RE = re.compile(r"([a-z]{2,3})(?:[_-]([A-Za-z]{2}))?(?:\.[A-Za-z0-9-]+)?")
_TIMEZONE_RE = re.compile(r"[A-Za-z0-9_+\-/ ().:]{1,64}")
_KEYMAP_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_SSH_KEY_RE = re.compile(r"(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( .*)?")


@dataclass(frozen=True)
class Nic:
    """One NIC, matched by MAC. ``address`` is ``None`` for DHCP."""

    name: str  # "nic1", "nic2", ... (fixed, never from attributes)
    mac: str  # aa:bb:cc:dd:ee:ff
    dhcp: bool
    address: ipaddress.IPv4Interface | None
    gateway: str | None
    dns: tuple[str, ...]
    vlanid: int | None

    @property
    def mac_windows(self) -> str:
        return self.mac.upper().replace(":", "-")

    @property
    def ip(self) -> str:
        return str(self.address.ip) if self.address else ""

    @property
    def netmask(self) -> str:
        return str(self.address.netmask) if self.address else ""

    @property
    def prefix(self) -> int:
        return self.address.network.prefixlen if self.address else 0

    @property
    def cidr(self) -> str:
        return self.address.with_prefixlen if self.address else ""


@dataclass(frozen=True)
class RenderContext:
    hostname: str
    domain: str
    fqdn: str
    root_password_hash: str  # $6$ crypt
    admin_password: str  # clear text, only for the Windows encodings
    timezone: str
    locale_posix: str  # en_US.UTF-8
    locale_windows: str  # en-US
    keyboard: str
    ssh_keys: tuple[str, ...]
    nics: tuple[Nic, ...]
    dns: tuple[str, ...]  # every NIC's DNS servers, in order, without repeats
    username: str
    registered_owner: str
    registered_organization: str
    join_domain: str
    join_user: str
    join_password: str
    join_ou: str
    callback_url: str
    deploy_token: str
    instance_id: str

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _text(name: str, value: object, *, required: bool = False, default: str = "") -> str:
    """A one-line string: no control or line-separator characters."""
    if value is None or value == "":
        if required:
            raise RenderError(f"missing attribute {name!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RenderError(f"attribute {name!r} must be a string")
    text = str(value)
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            raise RenderError(f"attribute {name!r} must be one line without control characters")
    return text


def _pattern(name: str, value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise RenderError(f"attribute {name!r} is not {what}: {value!r}")
    return value


def _dns_name(name: str, value: str) -> str:
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise RenderError(f"attribute {name!r} is not a DNS name: {value!r}")
    return value.rstrip(".")


def _bool(name: str, value: object) -> bool:
    try:
        return parse_bool(value)
    except ValueError:
        raise RenderError(f"attribute {name!r} must be true or false, not {value!r}") from None


def _list(name: str, value: object, *, sep: str) -> list[str]:
    """A list, or a string split on *sep* (and newlines); empty items dropped."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        items = value.splitlines() if sep == "\n" else re.split(rf"[{re.escape(sep)}\s]+", value)
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        raise RenderError(f"attribute {name!r} must be a list or a string")
    return [_text(f"{name}[{i}]", item).strip() for i, item in enumerate(items) if str(item).strip()]


def _ipv4(name: str, value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        raise RenderError(f"attribute {name!r} is not an IPv4 address: {value!r}") from None


def _nic(index: int, raw: object) -> Nic:
    key = f"NIC{index}"
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise RenderError(f"attribute {key!r} must be a mapping (or a JSON object)") from None
    if not isinstance(raw, Mapping):
        raise RenderError(f"attribute {key!r} must be a mapping (or a JSON object)")
    mac = _text(f"{key}.mac", raw.get("mac"), required=True).strip()
    try:
        mac = normalize_mac(mac)
    except ValueError:
        raise RenderError(f"attribute '{key}.mac' is not a MAC address: {mac!r}") from None
    dhcp = _bool(f"{key}.dhcp", raw.get("dhcp", not raw.get("ipaddress")))
    vlan_raw = _text(f"{key}.vlanid", raw.get("vlanid"))
    vlanid: int | None = None
    if vlan_raw:
        if not vlan_raw.isdigit() or not 1 <= int(vlan_raw) <= 4094:
            raise RenderError(f"attribute '{key}.vlanid' must be a VLAN id 1-4094: {vlan_raw!r}")
        vlanid = int(vlan_raw)
    dns = tuple(_ipv4(f"{key}.dns", item) for item in _list(f"{key}.dns", raw.get("dns"), sep=","))
    if dhcp:
        return Nic(f"nic{index}", mac, True, None, None, dns, vlanid)
    ip = _text(f"{key}.ipaddress", raw.get("ipaddress"), required=True).strip()
    netmask = _text(f"{key}.netmask", raw.get("netmask")).strip()
    if not netmask and "/" not in ip:
        raise RenderError(f"missing attribute '{key}.netmask' (static address {ip!r} has no prefix)")
    try:
        address = ipaddress.IPv4Interface(f"{ip}/{netmask}" if netmask else ip)
    except ValueError:
        raise RenderError(f"attribute '{key}.ipaddress'/'{key}.netmask' is not an IPv4 address and netmask: "
                          f"{ip!r} {netmask!r}") from None
    gateway_raw = _text(f"{key}.gateway", raw.get("gateway")).strip()
    gateway = _ipv4(f"{key}.gateway", gateway_raw) if gateway_raw else None
    if gateway and ipaddress.IPv4Address(gateway) not in address.network:
        raise RenderError(f"attribute '{key}.gateway' {gateway} is outside {address.network}")
    return Nic(f"nic{index}", mac, False, address, gateway, dns, vlanid)


def _nics(attributes: Mapping[str, Any]) -> tuple[Nic, ...]:
    indexes = sorted(int(m.group(1)) for key, value in attributes.items()
                     if value is not None and (m := _NIC_KEY_RE.fullmatch(key)))
    if 1 not in indexes:
        raise RenderError("missing attribute 'NIC1' (a mapping with at least 'mac')")
    nics = tuple(_nic(i, attributes[f"NIC{i}"]) for i in indexes)
    macs = [nic.mac for nic in nics]
    if len(set(macs)) != len(macs):
        raise RenderError("two NICs have the same MAC address")
    return nics


def _callback(callback_url: str, deploy_token: str) -> tuple[str, str]:
    url = _text("callback_url", callback_url, required=True)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(ch.isspace() for ch in url):
        raise RenderError(f"callback_url must be an http(s) URL without spaces: {url!r}")
    token = _text("deploy_token", deploy_token, required=True)
    if any(ch.isspace() for ch in token) or len(token) > 1024:
        raise RenderError("deploy_token must be at most 1024 characters without spaces")
    return url, token


def _root_password(attributes: Mapping[str, Any]) -> tuple[str, str]:
    """(the $6$ hash for Linux, the clear text for Windows); either attribute name is accepted."""
    clear = attributes.get("RootPassword") or attributes.get("AdminPassword")
    text = _text("RootPassword", clear, required=True)
    if SHA512_CRYPT_RE.fullmatch(text):  # already hashed: usable for Linux only
        return text, ""
    return sha512_crypt(text), text


def build_context(attributes: Mapping[str, Any], callback_url: str, deploy_token: str) -> RenderContext:
    """Check *attributes* and return what the templates see. Raises :class:`RenderError`."""
    if not isinstance(attributes, Mapping):
        raise RenderError("attributes must be a mapping")
    url, token = _callback(callback_url, deploy_token)
    hostname = _dns_name("Hostname", _text("Hostname", attributes.get("Hostname"), required=True).strip())
    domain_raw = _text("Domain", attributes.get("Domain")).strip()
    if "." in hostname:
        hostname, _, from_fqdn = hostname.partition(".")
        domain_raw = domain_raw or from_fqdn
    domain = _dns_name("Domain", domain_raw) if domain_raw else ""
    root_hash, clear = _root_password(attributes)
    if attributes.get("AdminPassword"):
        clear = _text("AdminPassword", attributes["AdminPassword"])
    locale_raw = _text("Locale", attributes.get("Locale"), default="en_US.UTF-8").strip()
    match = _LOCALE_RE.fullmatch(locale_raw)
    if not match:
        raise RenderError(f"attribute 'Locale' is not a locale like en_US or en-US: {locale_raw!r}")
    language, territory = match.group(1), (match.group(2) or match.group(1)).upper()
    ssh_keys = tuple(_pattern("SSHKeys", key, _SSH_KEY_RE, "an OpenSSH public key")
                     for key in _list("SSHKeys", attributes.get("SSHKeys"), sep="\n"))
    nics = _nics(attributes)
    dns = tuple(dict.fromkeys(server for nic in nics for server in nic.dns))
    join_domain = _text("JoinDomain", attributes.get("JoinDomain")).strip()
    if join_domain:
        join_domain = _dns_name("JoinDomain", join_domain)
    join_user = _text("DomainJoinUser", attributes.get("DomainJoinUser"), required=bool(join_domain))
    join_password = _text("DomainJoinPassword", attributes.get("DomainJoinPassword"), required=bool(join_domain))
    return RenderContext(
        hostname=hostname,
        domain=domain,
        fqdn=f"{hostname}.{domain}" if domain else hostname,
        root_password_hash=root_hash,
        admin_password=clear,
        timezone=_pattern("Timezone", _text("Timezone", attributes.get("Timezone"), default="UTC").strip(),
                          _TIMEZONE_RE, "a time zone name"),
        locale_posix=f"{language}_{territory}.UTF-8",
        locale_windows=f"{language}-{territory}",
        keyboard=_pattern("Keyboard", _text("Keyboard", attributes.get("Keyboard"), default="us").strip(),
                          _KEYMAP_RE, "a keyboard layout"),
        ssh_keys=ssh_keys,
        nics=nics,
        dns=dns,
        username=_pattern("Username", _text("Username", attributes.get("Username"), default="ubuntu").strip(),
                          re.compile(r"[a-z_][a-z0-9_-]{0,31}"), "a user name"),
        registered_owner=_text("RegisteredOwner", attributes.get("RegisteredOwner"), default="Ingot"),
        registered_organization=_text("RegisteredOrganization", attributes.get("RegisteredOrganization")),
        join_domain=join_domain,
        join_user=join_user,
        join_password=join_password,
        join_ou=_text("DomainJoinOU", attributes.get("DomainJoinOU")),
        callback_url=url,
        deploy_token=token,
        instance_id="ingot-" + hashlib.sha256(f"{url}\n{token}".encode()).hexdigest()[:16],
    )
