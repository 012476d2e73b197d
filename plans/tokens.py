"""Plan-script tokens: discovery and one-pass textual substitution, as HPE's scripts use them.

Pure code: no I/O. Before a plan script runs, every token in its text is replaced by a value;
the replacement is purely textual, so tokens work anywhere (here-documents, ``echo`` lines, a
whole command line). The forms, all found in HPE's published bundles:

==================================== =================================================================
``@Hostname@``                       a custom attribute
``@SSH:enabled@``                    with a default, used when the value is missing or empty; the
                                     default is any text without ``@`` or a newline (may be empty)
``@ManagementNIC.ipaddress@``        a sub-field of a ``nic`` attribute
``@ManagementNIC.vlanid:0@``         a sub-field with a default
``@_Initiator1.ip@``                 a value the appliance supplies itself (names starting with ``_``)
``@@{calm_macro}@@``                 a Nutanix Calm macro (``@@{name}@@`` or ``@@{name.sub}@@``)
==================================== =================================================================

A pair of ``@`` encloses a token only if the whole text between them is a token: a name
``[A-Za-z_][A-Za-z0-9_]*``, optionally ``.sub`` (same alphabet), optionally ``:default``. So
``root@host``, ``admin@example.com``, ``a@b and c@d`` and a lone ``@@`` are text, not tokens. The
text is scanned left to right and tokens never overlap (``@A@B@`` holds ``@A@`` then ``B@``).

Known limit of the grammar: an e-mail address directly followed by a colon and, on the same line,
another ``@`` (``admin@example.com:x@``) reads as a token with a default, as it would in HPE's
appliance.

**Where** :func:`guestfish_safe` **must be used.** Values are inserted as they are: a plan script
is a guestfish command list, and escaping for a target syntax (shell, kickstart, unattend XML) is
the template renderer's job. But every value that lands in a plan script must pass
:func:`guestfish_safe` (``substitute(script, values, guard=guestfish_safe)``) because a newline in
a value ends the current guestfish command, or the current ``upload -<<END`` here-document, and
what follows would run as guestfish commands (``!cmd`` runs a shell on the appliance). It does not
make a value safe for a shell that a script runs (``!source ./x`` or a first-boot script);
scripts quote their tokens themselves, as HPE's do (``"@Hostname@"``). A value that equals a
here-document's terminator and is substituted for a token standing alone on a line still ends the
here-document early; plan-script authors avoid lone-token lines inside here-documents.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from appliance.errors import InvalidInput

__all__ = [
    "MASK",
    "Insertion",
    "Substituted",
    "TokenRef",
    "UnresolvedTokens",
    "UnsafeValue",
    "discover",
    "guestfish_safe",
    "mask",
    "names",
    "substitute",
]

MASK = "********"

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
#: Calm first, so that ``@@{x}@@`` is one token; then HPE's ``@Name(.sub)?(:default)?@``.
TOKEN_RE = re.compile(
    rf"@@\{{(?P<cname>{_IDENT})(?:\.(?P<csub>{_IDENT}))?\}}@@"
    rf"|@(?P<name>{_IDENT})(?:\.(?P<sub>{_IDENT}))?(?::(?P<default>[^@\n]*))?@"
)


@dataclass(frozen=True, slots=True)
class TokenRef:
    """One token occurrence: ``text[span[0]:span[1]]`` is the whole token, ``@`` included."""

    name: str
    sub: str | None
    default: str | None
    span: tuple[int, int]
    calm: bool = False

    @property
    def key(self) -> str:
        """``Name`` or ``Name.sub``: what a flattened value mapping is keyed by."""
        return f"{self.name}.{self.sub}" if self.sub is not None else self.name

    @property
    def appliance(self) -> bool:
        """Whether the appliance supplies the value (names starting with ``_``)."""
        return self.name.startswith("_")


@dataclass(frozen=True, slots=True)
class Insertion:
    """Where a token's value landed in the substituted text, for precise masking."""

    key: str
    span: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Substituted:
    """The result of :func:`substitute`.

    :ivar text: the substituted text.
    :ivar used: ``{key: inserted value}`` for every distinct token key (defaults included).
    :ivar insertions: where each value landed in ``text``, in order.
    """

    text: str
    used: dict[str, str] = field(default_factory=dict)
    insertions: tuple[Insertion, ...] = ()

    def masked(self, secret_names: Iterable[str]) -> str:
        """``text`` with the values of the tokens naming a secret attribute replaced by ``MASK``.

        Span based, so it also hides secrets too short or too common for :func:`mask`.
        """
        secret = set(secret_names)
        parts: list[str] = []
        last = 0
        for insertion in self.insertions:
            if insertion.key.split(".", 1)[0] in secret:
                start, end = insertion.span
                parts.append(self.text[last:start])
                parts.append(MASK)
                last = end
        parts.append(self.text[last:])
        return "".join(parts)


class UnresolvedTokens(InvalidInput):
    """Tokens with neither a value nor a default; ``keys`` lists every one, sorted."""

    msg_fmt = "The plan script uses custom attributes that have no value: {keys}"
    error_code = "UNRESOLVED_CUSTOM_ATTRIBUTES"

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = sorted(set(keys))
        self.names = sorted({k.split(".", 1)[0] for k in self.keys})
        super().__init__(keys=", ".join(self.keys), nested=[(k, "no value and no default") for k in self.keys])


class UnsafeValue(InvalidInput):
    """A value that would break out of a guestfish command line; never carries the value."""

    msg_fmt = "Custom attribute {name}: {reason}"
    error_code = "UNSAFE_CUSTOM_ATTRIBUTE"

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name=name, reason=reason, nested=[(name, reason)])
        self.name = name
        self.reason = reason


def discover(text: str) -> list[TokenRef]:
    """Every token in ``text``, in order of appearance."""
    refs: list[TokenRef] = []
    for m in TOKEN_RE.finditer(text):
        if m.group("cname") is not None:
            refs.append(TokenRef(m.group("cname"), m.group("csub"), None, m.span(), calm=True))
        else:
            refs.append(TokenRef(m.group("name"), m.group("sub"), m.group("default"), m.span()))
    return refs


def names(text: str, *, appliance: bool = False) -> list[str]:
    """The sorted, unique attribute names a script uses (``ManagementNIC`` for ``@ManagementNIC.mac@``).

    Appliance-supplied names (``_Initiator1``) are left out unless ``appliance``; Calm macro
    names are included.
    """
    return sorted({r.name for r in discover(text) if appliance or not r.appliance})


def substitute(
    text: str,
    values: Mapping[str, object],
    *,
    appliance_values: Mapping[str, object] | None = None,
    guard: Callable[[str, str], str] | None = None,
) -> Substituted:
    """Replace every token in ``text`` in one pass; inserted text is never scanned again.

    ``values`` holds the custom attributes (``@Name@``, Calm macros); ``appliance_values`` the
    ``_``-prefixed names, which ``values`` cannot supply. A sub-field token ``@Nic.sub@`` reads
    ``values["Nic"]["sub"]`` (a dict, ``dns`` falling back to ``dns1``) or ``values["Nic.sub"]``
    (flattened); a sub-field the NIC dict lacks is empty. Values are turned into text: ``True`` →
    ``true``, numbers with ``str``; ``None`` counts as missing. A token's ``:default`` is used when
    its value is missing or empty; without a default an empty value inserts nothing and a missing
    one is unresolved. ``guard(value, key)`` sees each inserted value and may refuse it (pass
    :func:`guestfish_safe` for plan scripts).

    :raises UnresolvedTokens: listing every token key with no value and no default.
    """
    appliance_values = appliance_values or {}
    parts: list[str] = []
    used: dict[str, str] = {}
    insertions: list[Insertion] = []
    unresolved: list[str] = []
    last = 0
    length = 0
    for ref in discover(text):
        start, end = ref.span
        before = text[last:start]
        parts.append(before)
        length += len(before)
        last = end
        source = appliance_values if ref.appliance else values
        value = _lookup(source, ref.name, ref.sub)
        if (value is None or value == "") and ref.default is not None:
            value = ref.default
        if value is None:
            unresolved.append(ref.key)
            continue
        if guard is not None:
            value = guard(value, ref.key)
        parts.append(value)
        insertions.append(Insertion(ref.key, (length, length + len(value))))
        length += len(value)
        used.setdefault(ref.key, value)
    if unresolved:
        raise UnresolvedTokens(unresolved)
    parts.append(text[last:])
    return Substituted("".join(parts), used, tuple(insertions))


def _lookup(values: Mapping[str, object], name: str, sub: str | None) -> str | None:
    """The text for ``name`` or ``name.sub``; ``None`` when missing (or not renderable)."""
    if sub is None:
        return _text(values.get(name))
    flat = f"{name}.{sub}"
    if flat in values:
        return _text(values[flat])
    whole = values.get(name)
    if isinstance(whole, Mapping):
        if sub in whole:
            return _text(whole[sub])
        if sub == "dns" and "dns1" in whole:
            return _text(whole["dns1"])
        return ""  # the NIC is set, this sub-field is not: empty, as for a DHCP NIC's ipaddress
    if sub == "dns1" and f"{name}.dns" in values:
        return _text(values[f"{name}.dns"])
    return None


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    return None  # a dict or list cannot be inserted as text


def guestfish_safe(value: str, name: str = "value") -> str:
    """Return ``value`` if it can be inserted into a guestfish command list, else raise.

    Refuses a newline, carriage return or NUL: each would end the current command or
    here-document and let the rest of the value run as guestfish commands. Use it as
    ``substitute(script, values, guard=guestfish_safe)`` for every plan script.

    :raises UnsafeValue: naming ``name`` (the token key), never showing the value.
    """
    for char, label in (("\n", "a newline"), ("\r", "a carriage return"), ("\x00", "a NUL character")):
        if char in value:
            raise UnsafeValue(name, f"the value contains {label}, which is not allowed in a plan script")
    return value


def mask(text: str, secret_values: Iterable[str]) -> str:
    """Replace every whole occurrence of each secret value in ``text`` with ``MASK``.

    Longest secrets first (one regex alternation), so a secret that contains another is hidden
    whole; empty secrets are ignored. Use it on logs and script output, where spans are unknown.
    """
    secrets = sorted({s for s in secret_values if s}, key=len, reverse=True)
    if not secrets:
        return text
    pattern = re.compile("|".join(re.escape(s) for s in secrets))
    return pattern.sub(MASK, text)
