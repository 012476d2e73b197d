"""TFTP option negotiation (RFC 2347 framework; blksize RFC 2348; timeout and tsize RFC 2349;
windowsize RFC 7440), as a pure function of the request, the file size and server limits.

Contract: an option the server does not understand, or whose value is malformed or out of the
RFC's range, is left out of the OACK - RFC 2347 §2 lets the server ignore options, and the client
then falls back to the RFC 1350 default. Values the RFC lets the server lower (blksize,
windowsize) are clamped to the server maximum instead of refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pxe.tftp.packets import MAX_BLKSIZE

__all__ = [
    "DEFAULT_BLKSIZE",
    "DEFAULT_WINDOWSIZE",
    "Negotiated",
    "OptionLimits",
    "negotiate",
]

DEFAULT_BLKSIZE = 512  # RFC 1350 fixed block size, used when blksize is not negotiated
DEFAULT_WINDOWSIZE = 1  # RFC 1350 lock-step, used when windowsize is not negotiated
MIN_BLKSIZE = 8  # RFC 2348 §2
MIN_TIMEOUT, MAX_TIMEOUT = 1, 255  # RFC 2349 §2, seconds
MIN_WINDOWSIZE, MAX_WINDOWSIZE = 1, 65535  # RFC 7440 §3

# Decimal, ASCII only, bounded: int() on a 60 kB digit string would be slow and may raise.
_NUMBER = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True)
class OptionLimits:
    """Server-side ceilings applied while negotiating.

    :param max_blksize: largest block the server will send. 1468 keeps a DATA packet inside one
        1500-byte Ethernet frame (1500 - 20 IP - 8 UDP - 4 TFTP), avoiding IP fragmentation that
        some PXE ROMs cannot reassemble.
    :param max_windowsize: largest window; bounds the burst a slow NIC must absorb.
    """

    max_blksize: int = 1468
    max_windowsize: int = 16

    def __post_init__(self) -> None:
        if not MIN_BLKSIZE <= self.max_blksize <= MAX_BLKSIZE:
            raise ValueError(f"max_blksize must be in {MIN_BLKSIZE}..{MAX_BLKSIZE}")
        if not MIN_WINDOWSIZE <= self.max_windowsize <= MAX_WINDOWSIZE:
            raise ValueError(f"max_windowsize must be in {MIN_WINDOWSIZE}..{MAX_WINDOWSIZE}")


@dataclass(frozen=True)
class Negotiated:
    """The parameters a transfer runs with, and the options to put in the OACK.

    :param timeout: the client's retransmission timeout in seconds, or ``None`` for the server's.
    :param accepted: option name -> value for the OACK, in the client's order; empty means no
        OACK is sent and the transfer starts with DATA block 1 (RFC 2347 §2).
    """

    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = DEFAULT_WINDOWSIZE
    timeout: int | None = None
    tsize: int | None = None
    accepted: dict[str, str] = field(default_factory=dict)


def negotiate(requested: Mapping[str, str], *, file_size: int | None, limits: OptionLimits) -> Negotiated:
    """Choose transfer parameters for a read request.

    :param requested: the RRQ's options (names case-insensitive).
    :param file_size: the size of what will be sent, or ``None`` if it is not known in advance.
    :param limits: server ceilings.
    :returns: the negotiated parameters; ``accepted`` is what the OACK must carry.
    """
    blksize, windowsize = DEFAULT_BLKSIZE, DEFAULT_WINDOWSIZE
    timeout: int | None = None
    tsize: int | None = None
    accepted: dict[str, str] = {}
    for raw_name, raw_value in requested.items():
        name = raw_name.lower()
        value = _number(raw_value)
        if value is None:
            continue
        if name == "blksize" and value >= MIN_BLKSIZE:
            # RFC 2348: the server may answer with a smaller size than asked; never a larger one.
            blksize = min(value, MAX_BLKSIZE, limits.max_blksize)
            accepted[name] = str(blksize)
        elif name == "windowsize" and value >= MIN_WINDOWSIZE:
            windowsize = min(value, MAX_WINDOWSIZE, limits.max_windowsize)
            accepted[name] = str(windowsize)
        elif name == "timeout" and MIN_TIMEOUT <= value <= MAX_TIMEOUT:
            # RFC 2349: the server must echo the client's value or ignore the option.
            timeout = value
            accepted[name] = str(value)
        elif name == "tsize" and file_size is not None:
            # RFC 2349: on a read the client sends 0 and the server answers with the real size.
            # Generated content of unknown size simply omits it.
            tsize = file_size
            accepted[name] = str(file_size)
    return Negotiated(blksize, windowsize, timeout, tsize, accepted)


def _number(text: str) -> int | None:
    return int(text) if _NUMBER.fullmatch(text) else None
