"""Custom attributes as HPE Image Streamer sends them in OS build plans and deployment plans.

Pure code: no I/O, no database. A custom attribute arrives as HPE spells it::

    {"name": "Hostname", "type": "hostname", "value": "", "description": "...",
     "constraints": "{\\"helpText\\":\\"\\"}"}

``constraints`` is a JSON-encoded *string* (an object is accepted too). The types and
constraint keys below are the union of what HPE documents and what its published bundles use
(``HPE-ESXi-6.7-2021-01-21-v5.2`` and ``HPE_Foundation_Artifacts-5_00``):

========== =====================================================================================
type       constraint keys
========== =====================================================================================
string     ``minlen``, ``maxlen``, ``pattern`` / ``regex`` (full match, Python ``re``), ``options``
number     ``minimum`` / ``min``, ``maximum`` / ``max``, ``increment``, ``unit`` (numbers may be
           JSON strings: Foundation sends ``{"minimum":"1","maximum":"51200","unit":"MiB"}``)
option     ``options``
password   ``minlen``, ``maxlen``, ``pattern`` / ``regex``; ``options`` is ignored (the ESXi
           bundle ships ``{"options":[""]}`` on its password)
hostname   ``helpText``
fqdn       ``helpText``
ipv4       ``helpText``
nic        ``ipv4static``, ``ipv4dhcp``, ``ipv4disable``, ``parameters``
========== =====================================================================================

``options`` on a string restricts it only when it holds a non-empty entry, and an option attribute
without options accepts any value (HPE's semantics here are inferred, not documented).
``helpText`` is accepted on every type; unknown constraint keys are kept in ``raw_constraints``
and otherwise ignored, so a newer HPE export still imports.

NIC values arrive either as a dict (``{"ipaddress": ..., "dhcp": false}``) or flattened, as the
OneView server profile's ``osCustomAttributes`` sends them (``ManagementNIC.ipaddress``,
``ManagementNIC.dhcp``, ``ManagementNIC.constraint``, ``ManagementNIC.connectionid``, ...). Both
are normalized to one dict: known sub-fields only, empty sub-fields dropped, ``dhcp`` and
``ipv4disable`` as booleans, ``vlanid`` as an int, ``mac`` in lower-case colon form, ``dns`` read
as ``dns1``.

Empty values (``None`` or ``""``; for a NIC, no sub-field set) mean "not set": they are valid
unless ``required=True`` (use that at deploy time, when every attribute the plan needs must have
a value). Error messages never repeat the value of a password attribute.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, TypeAlias

from appliance.errors import InvalidInput

__all__ = [
    "NIC_FIELDS",
    "NIC_META_FIELDS",
    "AttributeDefinitionInvalid",
    "AttributeInvalid",
    "AttributeType",
    "AttributesInvalid",
    "Constraints",
    "CustomAttribute",
    "NicValue",
    "Value",
    "is_secret",
    "normalize_mac",
    "normalize_netmask",
    "parse_attribute",
    "parse_attributes",
    "validate",
    "validate_all",
]

#: A custom attribute name: what a plan-script token can name (``@Name@``). Names starting with
#: ``_`` are reserved for values the appliance supplies itself (``@_Initiator1.ip@``).
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

#: NIC sub-fields a plan script can use (``@ManagementNIC.ipaddress@``) and a ``parameters``
#: constraint can list.
NIC_FIELDS: tuple[str, ...] = ("ipaddress", "dhcp", "netmask", "gateway", "dns1", "dns2", "domain", "mac", "vlanid")
#: Sub-fields the OneView server profile adds when it flattens a NIC; kept as strings (``constraint``
#: is ``auto``, ``dhcp`` or ``userspecified``) or booleans (``ipv4disable``).
NIC_META_FIELDS: tuple[str, ...] = ("constraint", "connectionid", "networkuri", "ipv4disable")
#: Sub-fields that carry addressing and are therefore subject to the ``parameters`` constraint.
_NIC_PARAMETER_FIELDS = ("ipaddress", "netmask", "gateway", "dns1", "dns2", "domain", "mac", "vlanid")
_NIC_CONSTRAINT_MODES = ("auto", "dhcp", "userspecified")

NicValue: TypeAlias = dict[str, str | int | bool]
#: A normalized value: ``str`` for string, option, password, hostname, fqdn and ipv4; ``int`` or
#: ``float`` for number (``""`` when unset); :data:`NicValue` for nic (``{}`` when unset).
Value: TypeAlias = str | int | float | NicValue

_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_MAC_RE = re.compile(
    r"(?:[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}"  # aa:bb:cc:dd:ee:ff, aa-bb-...
    r"|[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}"  # aabb.ccdd.eeff (Cisco)
    r"|[0-9a-fA-F]{12})\Z"  # aabbccddeeff
)
_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off", ""})


class AttributeType(StrEnum):
    STRING = "string"
    NUMBER = "number"
    OPTION = "option"
    PASSWORD = "password"  # noqa: S105 (a type name, not a secret)
    HOSTNAME = "hostname"
    FQDN = "fqdn"
    IPV4 = "ipv4"
    NIC = "nic"


# --- errors --------------------------------------------------------------------------------------
class AttributeInvalid(InvalidInput):
    """One value does not fit its attribute's type or constraints."""

    msg_fmt = "Custom attribute {name}: {reason}"
    error_code = "INVALID_CUSTOM_ATTRIBUTE"

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name=name, reason=reason, nested=[(name, reason)])
        self.name = name
        self.reason = reason


class AttributesInvalid(InvalidInput):
    """Several values are invalid; ``errors`` lists every ``(name, reason)``."""

    msg_fmt = "{count} custom attribute value(s) are not valid: {summary}"
    error_code = "INVALID_CUSTOM_ATTRIBUTES"

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors = list(errors)
        summary = "; ".join(f"{name}: {reason}" for name, reason in self.errors)
        super().__init__(count=len(self.errors), summary=summary, nested=self.errors)


class AttributeDefinitionInvalid(InvalidInput):
    """Custom attribute definitions (``customAttributes`` of a plan) are malformed."""

    msg_fmt = "The custom attribute definitions are not valid: {summary}"
    error_code = "INVALID_CUSTOM_ATTRIBUTE_DEFINITION"

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors = list(errors)
        summary = "; ".join(f"{where}: {reason}" for where, reason in self.errors)
        super().__init__(summary=summary, nested=self.errors)


class _Bad(Exception):
    """Internal: one reason, turned into a public error by the caller that knows the name."""


# --- the model -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Constraints:
    """The parsed ``constraints`` string. ``None`` means "not constrained"."""

    options: tuple[str, ...] | None = None
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    increment: Decimal | None = None
    unit: str = ""
    minlen: int | None = None
    maxlen: int | None = None
    pattern: str | None = None
    help_text: str = ""
    ipv4static: bool = True
    ipv4dhcp: bool = True
    ipv4disable: bool = False
    parameters: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class CustomAttribute:
    """One custom attribute definition. ``raw_constraints`` is the JSON string to send back."""

    name: str
    type: AttributeType
    value: str | None = None
    description: str = ""
    constraints: Constraints = Constraints()
    raw_constraints: str = "{}"

    def to_hpe(self) -> dict[str, Any]:
        """The attribute as HPE spells it (``constraints`` as a JSON string)."""
        return {
            "name": self.name,
            "type": self.type.value,
            "value": self.value,
            "description": self.description,
            "constraints": self.raw_constraints,
        }


def is_secret(attribute: CustomAttribute) -> bool:
    """Whether values of ``attribute`` must be stored apart and masked in logs (password type)."""
    return attribute.type is AttributeType.PASSWORD


# --- parsing definitions -------------------------------------------------------------------------
def parse_attributes(raw: Sequence[Mapping[str, Any]] | None) -> list[CustomAttribute]:
    """Parse a plan's ``customAttributes`` list; every bad entry is reported in one error.

    :raises AttributeDefinitionInvalid: with one ``(where, reason)`` per bad entry, ``where``
        being ``customAttributes[i]`` or the attribute's name.
    """
    errors: list[tuple[str, str]] = []
    result: list[CustomAttribute] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw or ()):
        where = f"customAttributes[{index}]"
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str) and entry["name"]:
            where = f"{where} ({entry['name']})"
        try:
            attribute = parse_attribute(entry)
        except _Bad as exc:
            errors.append((where, str(exc)))
            continue
        if attribute.name in seen:
            errors.append((where, f"the name {attribute.name} is used twice"))
            continue
        seen.add(attribute.name)
        result.append(attribute)
    if errors:
        raise AttributeDefinitionInvalid(errors)
    return result


def parse_attribute(entry: Mapping[str, Any]) -> CustomAttribute:
    """Parse one definition. Raises an internal error; use :func:`parse_attributes`."""
    if not isinstance(entry, Mapping):
        raise _Bad(f"expected an object, got {type(entry).__name__}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _Bad("name is missing")
    if not NAME_RE.match(name):
        if name.startswith("_"):
            raise _Bad(f"the name {name!r} starts with '_', which is reserved for appliance-supplied values")
        raise _Bad(f"the name {name!r} is not a token name (letters, digits and '_', starting with a letter)")
    raw_type = entry.get("type")
    try:
        attr_type = AttributeType(str(raw_type).lower())
    except ValueError:
        allowed = ", ".join(t.value for t in AttributeType)
        raise _Bad(f"type {raw_type!r} is not one of {allowed}") from None
    value = entry.get("value")
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, int | float):
        value = str(value)
    elif value is not None and not isinstance(value, str):
        raise _Bad(f"value must be a string or null, got {type(value).__name__}")
    description = entry.get("description") or ""
    if not isinstance(description, str):
        raise _Bad("description must be a string")
    raw_constraints = entry.get("constraints")
    if raw_constraints is None or raw_constraints == "":
        data: Any = {}
        raw_constraints = "{}"
    elif isinstance(raw_constraints, str):
        try:
            data = json.loads(raw_constraints)
        except json.JSONDecodeError as exc:
            raise _Bad(f"constraints is not valid JSON ({exc.msg})") from None
    elif isinstance(raw_constraints, Mapping):
        data = dict(raw_constraints)
        raw_constraints = json.dumps(data, separators=(",", ":"))
    else:
        raise _Bad("constraints must be a JSON string")
    if not isinstance(data, dict):
        raise _Bad("constraints must encode a JSON object")
    constraints = _parse_constraints(attr_type, data)
    return CustomAttribute(name, attr_type, value, description, constraints, raw_constraints)


def _parse_constraints(attr_type: AttributeType, data: dict[str, Any]) -> Constraints:
    options = data.get("options")
    if options is not None:
        if not isinstance(options, list) or not all(isinstance(o, str | int | float) for o in options):
            raise _Bad("constraints.options must be a list of strings")
        options = tuple(str(o) for o in options)
    minimum = _decimal_key(data, "minimum", "min")
    maximum = _decimal_key(data, "maximum", "max")
    increment = _decimal_key(data, "increment")
    if increment is not None and increment <= 0:
        raise _Bad("constraints.increment must be positive")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise _Bad(f"constraints.minimum {minimum} is above maximum {maximum}")
    minlen = _int_key(data, "minlen")
    maxlen = _int_key(data, "maxlen")
    if minlen is not None and maxlen is not None and minlen > maxlen:
        raise _Bad(f"constraints.minlen {minlen} is above maxlen {maxlen}")
    pattern = data.get("pattern", data.get("regex"))
    if pattern == "":
        pattern = None
    if pattern is not None:
        if not isinstance(pattern, str):
            raise _Bad("constraints.pattern must be a string")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _Bad(f"constraints.pattern is not a valid regular expression ({exc})") from None
    parameters = data.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, list) or not all(isinstance(p, str) for p in parameters):
            raise _Bad("constraints.parameters must be a list of strings")
        unknown = [p for p in parameters if _nic_field(p) not in NIC_FIELDS]
        if unknown:
            raise _Bad(f"constraints.parameters names unknown NIC fields: {', '.join(unknown)}")
        parameters = tuple(_nic_field(p) for p in parameters)
    flags = {}
    for key, default in (("ipv4static", True), ("ipv4dhcp", True), ("ipv4disable", False)):
        raw = data.get(key, default)
        try:
            flags[key] = _to_bool(raw)
        except _Bad:
            raise _Bad(f"constraints.{key} must be true or false") from None
    if attr_type is AttributeType.NIC and not (flags["ipv4static"] or flags["ipv4dhcp"] or flags["ipv4disable"]):
        raise _Bad("constraints allow neither static, DHCP nor disabled IPv4")
    unit = data.get("unit") or ""
    help_text = data.get("helpText") or ""
    return Constraints(
        options=options,
        minimum=minimum,
        maximum=maximum,
        increment=increment,
        unit=str(unit),
        minlen=minlen,
        maxlen=maxlen,
        pattern=pattern,
        help_text=str(help_text),
        ipv4static=flags["ipv4static"],
        ipv4dhcp=flags["ipv4dhcp"],
        ipv4disable=flags["ipv4disable"],
        parameters=parameters,
    )


def _decimal_key(data: Mapping[str, Any], *keys: str) -> Decimal | None:
    for key in keys:
        raw = data.get(key)
        if raw is None or raw == "":
            continue
        try:
            return _to_decimal(raw)
        except _Bad:
            raise _Bad(f"constraints.{key} must be a number, got {raw!r}") from None
    return None


def _int_key(data: Mapping[str, Any], key: str) -> int | None:
    raw = data.get(key)
    if raw is None or raw == "":
        return None
    try:
        number = _to_decimal(raw)
    except _Bad:
        number = Decimal(-1)
    if number != number.to_integral_value() or number < 0:
        raise _Bad(f"constraints.{key} must be a non-negative integer, got {raw!r}")
    return int(number)


# --- validating values ---------------------------------------------------------------------------
def validate(attribute: CustomAttribute, value: object, *, required: bool = False) -> Value:
    """Check ``value`` against ``attribute``'s type and constraints and return it normalized.

    ``None`` or ``""`` (for a NIC: nothing set) means "not set" and is returned as ``""`` (``{}``
    for a NIC) unless ``required``.

    :raises AttributeInvalid: with a message naming the attribute and the reason.
    """
    try:
        return _validate(attribute, value, required)
    except _Bad as exc:
        raise AttributeInvalid(attribute.name, str(exc)) from None


def validate_all(
    attributes: Sequence[CustomAttribute],
    values: Mapping[str, object],
    *,
    required: bool = False,
    allow_unknown: bool = False,
) -> dict[str, Value]:
    """Validate the values for every attribute and return ``{name: normalized value}``.

    A value missing from ``values`` falls back to the attribute's own ``value`` (its default).
    NIC values may be given as ``values[Name]`` (a dict) and/or flattened ``values["Name.sub"]``;
    a sub-field given both ways with different values is an error. Names in ``values`` that no
    attribute declares are errors unless ``allow_unknown``.

    :raises AttributesInvalid: listing every ``(name, reason)`` at once.
    """
    errors: list[tuple[str, str]] = []
    result: dict[str, Value] = {}
    by_name = {a.name: a for a in attributes}
    consumed: set[str] = set()
    for attribute in attributes:
        raw: object
        if attribute.type is AttributeType.NIC:
            merged, conflicts, keys = _collect_nic(attribute.name, values)
            consumed |= keys
            if conflicts:
                errors.extend((attribute.name, f"{field} is given twice with different values") for field in conflicts)
                continue
            raw = merged if keys else attribute.value
        elif attribute.name in values:
            raw = values[attribute.name]
            consumed.add(attribute.name)
        else:
            raw = attribute.value
        try:
            result[attribute.name] = _validate(attribute, raw, required)
        except _Bad as exc:
            errors.append((attribute.name, str(exc)))
    if not allow_unknown:
        for key in values:
            if key in consumed:
                continue
            base = key.split(".", 1)[0]
            if key.startswith("_"):
                errors.append((key, "names starting with '_' are reserved for appliance-supplied values"))
            elif base in by_name and "." in key:
                errors.append((key, f"{base} is a {by_name[base].type.value} attribute and has no sub-fields"))
            else:
                errors.append((key, "no custom attribute of this plan has this name"))
    if errors:
        raise AttributesInvalid(errors)
    return result


def _collect_nic(name: str, values: Mapping[str, object]) -> tuple[object, list[str], set[str]]:
    """Merge ``values[name]`` (a dict) with flattened ``values["name.sub"]``.

    Returns the raw value to validate, the sub-fields given twice with different values, and
    the keys of ``values`` that belong to this NIC.
    """
    prefix = name + "."
    flat = {key[len(prefix) :]: val for key, val in values.items() if key.startswith(prefix)}
    keys = {prefix + field for field in flat}
    whole = values.get(name)
    if name in values:
        keys.add(name)
    if not flat:
        return whole, [], keys
    if whole is None or whole == "":
        return flat, [], keys
    if not isinstance(whole, Mapping):
        return whole, [], keys
    merged: dict[str, object] = {str(k): v for k, v in whole.items()}
    conflicts = sorted(f for f, v in flat.items() if f in merged and merged[f] != v)
    merged.update(flat)
    return merged, conflicts, keys


def _validate(attribute: CustomAttribute, value: object, required: bool) -> Value:
    kind = attribute.type
    if kind is AttributeType.NIC:
        return _validate_nic(attribute, value, required)
    if value is None or value == "":
        if required:
            raise _Bad("a value is required")
        return ""
    if isinstance(value, Mapping | list | tuple | set):
        raise _Bad(f"expects a single {kind.value} value, got {type(value).__name__}")
    c = attribute.constraints
    if kind is AttributeType.NUMBER:
        return _validate_number(c, value)
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float | Decimal):
        text = str(value)
    else:
        raise _Bad(f"expects a {kind.value} value, got {type(value).__name__}")
    secret = kind is AttributeType.PASSWORD
    if kind is AttributeType.OPTION:
        if c.options and text not in c.options:
            raise _Bad(f"{text!r} is not one of the options {', '.join(repr(o) for o in c.options)}")
        return text
    if kind in (AttributeType.STRING, AttributeType.PASSWORD):
        _check_text(c, text, secret=secret)
        if kind is AttributeType.STRING and c.options and any(c.options) and text not in c.options:
            raise _Bad(f"{text!r} is not one of the options {', '.join(repr(o) for o in c.options)}")
        return text
    if kind is AttributeType.HOSTNAME:
        return _check_hostname(text, fqdn=False)
    if kind is AttributeType.FQDN:
        return _check_hostname(text, fqdn=True)
    if kind is AttributeType.IPV4:
        return _check_ipv4(text)
    raise AssertionError(kind)  # pragma: no cover


def _check_text(c: Constraints, text: str, *, secret: bool) -> None:
    shown = "the value" if secret else repr(text)
    if c.minlen is not None and len(text) < c.minlen:
        raise _Bad(f"{shown} is shorter than {c.minlen} characters")
    if c.maxlen is not None and len(text) > c.maxlen:
        raise _Bad(f"{shown} is longer than {c.maxlen} characters")
    if c.pattern is not None and re.fullmatch(c.pattern, text) is None:
        raise _Bad(f"{shown} does not match the pattern {c.pattern!r}")


def _validate_number(c: Constraints, value: object) -> int | float:
    try:
        number = _to_decimal(value)
    except _Bad:
        raise _Bad(f"{value!r} is not a number") from None
    unit = f" {c.unit}" if c.unit else ""
    if c.minimum is not None and number < c.minimum:
        raise _Bad(f"{_fmt(number)} is below the minimum {_fmt(c.minimum)}{unit}")
    if c.maximum is not None and number > c.maximum:
        raise _Bad(f"{_fmt(number)} is above the maximum {_fmt(c.maximum)}{unit}")
    if c.increment is not None:
        base = c.minimum if c.minimum is not None else Decimal(0)
        if (number - base) % c.increment != 0:
            raise _Bad(f"{_fmt(number)} is not {_fmt(base)} plus a multiple of {_fmt(c.increment)}{unit}")
    if number == number.to_integral_value():
        return int(number)
    return float(number)


def _fmt(number: Decimal) -> str:
    return str(int(number)) if number == number.to_integral_value() else str(number.normalize())


def _to_decimal(value: object) -> Decimal:
    if isinstance(value, bool):
        raise _Bad("not a number")
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise _Bad("not a number") from None
    else:
        raise _Bad("not a number")
    if not number.is_finite():
        raise _Bad("not a finite number")
    return number


def _check_hostname(text: str, *, fqdn: bool) -> str:
    kind = "fully qualified domain name" if fqdn else "host name"
    name = text[:-1] if fqdn and text.endswith(".") else text
    if not name.isascii():
        raise _Bad(f"{text!r} is not a valid {kind}: only ASCII letters, digits and '-' (use punycode)")
    if len(name) > 253:
        raise _Bad(f"{text!r} is not a valid {kind}: longer than 253 characters")
    labels = name.split(".")
    if fqdn and len(labels) < 2:
        raise _Bad(f"{text!r} is not a valid {kind}: it needs at least two labels (host.domain)")
    for label in labels:
        if not _LABEL_RE.match(label):
            raise _Bad(
                f"{text!r} is not a valid {kind}: each label is 1 to 63 letters, digits or '-', "
                "and neither starts nor ends with '-' (RFC 1123)"
            )
    if labels[-1].isdigit():
        raise _Bad(f"{text!r} is not a valid {kind}: the last label is all digits")
    return name


def _check_ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise _Bad(f"{text!r} is not an IPv4 address (a.b.c.d)") from None


def normalize_netmask(value: str) -> str:
    """``255.255.255.0``, ``24`` or ``/24`` → ``255.255.255.0``; raises ``ValueError`` otherwise."""
    text = value.strip()
    prefix = text[1:] if text.startswith("/") else text
    if prefix.isdigit() and prefix.isascii():
        bits = int(prefix)
        if not 0 <= bits <= 32:
            raise ValueError(f"{value!r} is not a prefix length from 0 to 32")
        return str(ipaddress.IPv4Network(f"0.0.0.0/{bits}").netmask)
    try:
        mask = int(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"{value!r} is not a netmask (255.255.255.0 or 24)") from None
    inverted = mask ^ 0xFFFFFFFF
    if inverted & (inverted + 1):
        raise ValueError(f"{value!r} is not a contiguous netmask")
    return text


def normalize_mac(value: str) -> str:
    """``AA-BB-CC-DD-EE-FF``, ``aabb.ccdd.eeff`` or ``AABBCCDDEEFF`` → ``aa:bb:cc:dd:ee:ff``.

    :raises ValueError: for anything else.
    """
    text = value.strip()
    if not _MAC_RE.match(text):
        raise ValueError(f"{value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    digits = re.sub(r"[^0-9a-fA-F]", "", text).lower()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def _nic_field(field: str) -> str:
    return "dns1" if field == "dns" else field


def parse_bool(value: object) -> bool:
    """A flag as HPE and JSON files write it: a bool, ``"true"``/``"yes"``/``"1"``/``"on"`` or
    ``"false"``/``"no"``/``"0"``/``"off"``/``""`` (None is false).

    :raises ValueError: for anything else.
    """
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not true or false")


def _to_bool(value: object) -> bool:
    try:
        return parse_bool(value)
    except ValueError as exc:
        raise _Bad(str(exc)) from None


def _validate_nic(attribute: CustomAttribute, value: object, required: bool) -> NicValue:
    c = attribute.constraints
    if isinstance(value, str) and value.strip().startswith("{"):
        try:  # a default stored in the definition's ``value`` string
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _Bad("the value is not a valid JSON object of NIC fields") from None
    if value is None or value == "":
        fields: dict[str, object] = {}
    elif isinstance(value, Mapping):
        fields = {}
        prefix = attribute.name + "."
        for key, val in value.items():
            field = str(key)
            if field.startswith(prefix):
                field = field[len(prefix) :]
            field = _nic_field(field)
            if field in fields and fields[field] != val:
                raise _Bad(f"{field} is given twice with different values")
            fields[field] = val
    else:
        raise _Bad(f"expects an object of NIC fields ({', '.join(NIC_FIELDS)}), got {type(value).__name__}")

    unknown = sorted(f for f in fields if f not in NIC_FIELDS and f not in NIC_META_FIELDS)
    if unknown:
        raise _Bad(f"unknown NIC field(s) {', '.join(unknown)} (known: {', '.join(NIC_FIELDS + NIC_META_FIELDS)})")

    out: NicValue = {}
    for field, raw in fields.items():
        if raw is None or raw == "":
            continue
        if isinstance(raw, Mapping | list | tuple | set):
            raise _Bad(f"{field} must be a single value")
        try:
            out[field] = _nic_subfield(field, raw)
        except ValueError as exc:
            raise _Bad(f"{field}: {exc}") from None
    if not out:
        if required:
            raise _Bad("a value is required")
        return {}

    if c.parameters is not None:
        extra = [f for f in _NIC_PARAMETER_FIELDS if f in out and f not in c.parameters]
        if extra:
            raise _Bad(f"{', '.join(extra)} not allowed here (allowed: {', '.join(c.parameters) or 'none'})")

    mode_key = out.get("constraint")
    if mode_key is not None and mode_key not in _NIC_CONSTRAINT_MODES:
        raise _Bad(f"constraint {mode_key!r} is not one of {', '.join(_NIC_CONSTRAINT_MODES)}")
    dhcp = bool(out.get("dhcp", False))
    if mode_key == "dhcp":
        if "dhcp" in out and not dhcp:
            raise _Bad("constraint 'dhcp' contradicts dhcp=false")
        dhcp = True
    elif mode_key in ("auto", "userspecified") and dhcp:
        raise _Bad(f"constraint {mode_key!r} contradicts dhcp=true")
    disabled = bool(out.get("ipv4disable", False))
    out["dhcp"] = dhcp

    addressable = c.parameters is None or "ipaddress" in c.parameters
    if disabled:
        if not c.ipv4disable:
            raise _Bad("disabling IPv4 is not allowed for this NIC")
        if dhcp or "ipaddress" in out:
            raise _Bad("ipv4disable excludes dhcp and ipaddress")
    elif dhcp:
        if not c.ipv4dhcp:
            raise _Bad("DHCP is not allowed for this NIC")
        if "ipaddress" in out:
            raise _Bad("dhcp excludes ipaddress: give either dhcp=true or a static ipaddress and netmask")
    elif addressable:
        if not c.ipv4static:
            raise _Bad("static addressing is not allowed for this NIC; set dhcp=true")
        missing = [f for f in ("ipaddress", "netmask") if f not in out]
        if missing:
            raise _Bad(
                f"static addressing needs ipaddress and netmask ({', '.join(missing)} missing); or set dhcp=true"
            )
        network = ipaddress.IPv4Network(f"{out['ipaddress']}/{out['netmask']}", strict=False)
        gateway = out.get("gateway")
        if gateway is not None and ipaddress.IPv4Address(str(gateway)) not in network:
            raise _Bad(f"gateway {gateway} is not in the subnet {network} of ipaddress {out['ipaddress']}")
    return out


def _nic_subfield(field: str, raw: object) -> str | int | bool:
    if field in ("dhcp", "ipv4disable"):
        try:
            return _to_bool(raw)
        except _Bad:
            raise ValueError(f"{raw!r} is not true or false") from None
    if isinstance(raw, bool):
        raise ValueError(f"{raw!r} is not valid here")
    text = str(raw).strip()
    if field in ("ipaddress", "gateway", "dns1", "dns2"):
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv4 address (a.b.c.d)") from None
    if field == "netmask":
        return normalize_netmask(text)
    if field == "mac":
        return normalize_mac(text)
    if field == "vlanid":
        if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 4094:
            raise ValueError(f"{text!r} is not a VLAN id from 0 to 4094")
        return int(text)
    if field == "domain":
        try:
            return _check_hostname(text, fqdn=False)
        except _Bad as exc:
            raise ValueError(str(exc)) from None
    if field == "constraint":
        return text.lower()
    return text
