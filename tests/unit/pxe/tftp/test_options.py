"""Option negotiation table tests (RFC 2347/2348/2349/7440)."""

from __future__ import annotations

import pytest

from pxe.tftp.options import Negotiated, OptionLimits, negotiate

LIMITS = OptionLimits(max_blksize=1468, max_windowsize=16)


@pytest.mark.parametrize(
    ("requested", "file_size", "expected"),
    [
        pytest.param({}, 10, Negotiated(), id="none"),
        pytest.param({"blksize": "1468"}, 10, Negotiated(blksize=1468, accepted={"blksize": "1468"}), id="blksize"),
        pytest.param({"blksize": "8"}, 10, Negotiated(blksize=8, accepted={"blksize": "8"}), id="blksize-min"),
        pytest.param({"blksize": "7"}, 10, Negotiated(), id="blksize-too-small-ignored"),
        pytest.param(
            {"blksize": "65464"}, 10, Negotiated(blksize=1468, accepted={"blksize": "1468"}), id="blksize-clamped"
        ),
        pytest.param(
            {"blksize": "99999"}, 10, Negotiated(blksize=1468, accepted={"blksize": "1468"}), id="blksize-over-rfc"
        ),
        pytest.param({"blksize": "big"}, 10, Negotiated(), id="blksize-not-a-number"),
        pytest.param({"blksize": "-512"}, 10, Negotiated(), id="blksize-negative"),
        pytest.param({"blksize": "1" * 5000}, 10, Negotiated(), id="blksize-huge-digit-string"),
        pytest.param({"tsize": "0"}, 4096, Negotiated(tsize=4096, accepted={"tsize": "4096"}), id="tsize"),
        pytest.param({"tsize": "0"}, 0, Negotiated(tsize=0, accepted={"tsize": "0"}), id="tsize-empty-file"),
        pytest.param({"tsize": "0"}, None, Negotiated(), id="tsize-unknown-size-omitted"),
        pytest.param({"timeout": "1"}, 10, Negotiated(timeout=1, accepted={"timeout": "1"}), id="timeout-min"),
        pytest.param({"timeout": "255"}, 10, Negotiated(timeout=255, accepted={"timeout": "255"}), id="timeout-max"),
        pytest.param({"timeout": "0"}, 10, Negotiated(), id="timeout-zero-ignored"),
        pytest.param({"timeout": "256"}, 10, Negotiated(), id="timeout-too-big-ignored"),
        pytest.param({"windowsize": "4"}, 10, Negotiated(windowsize=4, accepted={"windowsize": "4"}), id="window"),
        pytest.param(
            {"windowsize": "65535"}, 10, Negotiated(windowsize=16, accepted={"windowsize": "16"}), id="window-clamped"
        ),
        pytest.param({"windowsize": "0"}, 10, Negotiated(), id="window-zero-ignored"),
        pytest.param({"multicast": "", "rollover": "0"}, 10, Negotiated(), id="unknown-ignored"),
        pytest.param({"BlkSize": "512"}, 10, Negotiated(blksize=512, accepted={"blksize": "512"}), id="case"),
    ],
)
def test_negotiate(requested: dict[str, str], file_size: int | None, expected: Negotiated) -> None:
    assert negotiate(requested, file_size=file_size, limits=LIMITS) == expected


def test_accepted_keeps_client_order_and_drops_rejects() -> None:
    result = negotiate(
        {"tsize": "0", "bogus": "1", "windowsize": "8", "timeout": "999", "blksize": "1400"},
        file_size=7,
        limits=LIMITS,
    )
    assert list(result.accepted.items()) == [("tsize", "7"), ("windowsize", "8"), ("blksize", "1400")]
    assert (result.blksize, result.windowsize, result.timeout, result.tsize) == (1400, 8, None, 7)


def test_server_limits_can_be_raised_to_rfc_maximum() -> None:
    limits = OptionLimits(max_blksize=65464, max_windowsize=65535)
    result = negotiate({"blksize": "65464", "windowsize": "65535"}, file_size=None, limits=limits)
    assert (result.blksize, result.windowsize) == (65464, 65535)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_blksize": 7}, {"max_blksize": 65465}, {"max_windowsize": 0}, {"max_windowsize": 65536}],
)
def test_limits_validated(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be in"):
        OptionLimits(**kwargs)
