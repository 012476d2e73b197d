"""TFTP (RFC 1350 with options RFC 2347/2348/2349 and windowsize RFC 7440), sans-I/O.

- ``packets``: bytes <-> packet dataclasses; ``DecodeError`` for anything malformed.
- ``options``: pure option negotiation against server limits.
- ``protocol``: ``ReadTransfer``, the per-transfer state machine (events in, actions out).
- ``files``: safe filename resolution under a root, and ``FileReader``/``BytesReader``.

The asyncio transport (ephemeral ports, timers, concurrency) lives in ``server.py``, not here.
"""
