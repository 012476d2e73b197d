"""Two fixes to pyghmi 1.6.x's threading, needed because the appliance calls pyghmi from many
worker threads at once (a fleet sweep), which pyghmi supports but rarely sees.

1. Lock order. pyghmi guards its session tables with two global locks, KEEPALIVE_SESSIONS and
   WAITING_SESSIONS, and takes them in both orders: sending takes KEEPALIVE then WAITING, while a
   retry after a timeout (``awaitresponse`` -> ``_timedout`` -> relogin) holds WAITING and then
   takes KEEPALIVE. When BMCs die mid-session, their retries meet other threads' sends and every
   pyghmi call in the process stalls: in a 500-BMC sweep with 50 BMCs killed, 300 live BMCs
   timed out. One lock for both tables makes the inversion impossible; the sections it guards
   are short dictionary updates.

2. Lost wake-up. A caller that waits for a reply puts an event into ``session.ioqueue``; pyghmi's I/O thread sets
it when a packet from that BMC arrives. If the reply arrives *before* the event is queued — the
BMC answers in well under a millisecond on a LAN — the I/O thread has already filed the packet
into the session's ``pktqueue`` and nobody wakes the waiter: it sleeps until the retransmit
deadline (0.5-1 s). From the main thread this is rare; from worker threads, where the appliance
must call pyghmi, it hit about one call in twenty in our sweeps, turning 1 ms reads into 1 s ones.

The replacement queues the event exactly as pyghmi does, then checks whether the reply is
already waiting, and also re-checks at short intervals so no other ordering can strand it.
"""

from __future__ import annotations

import threading
from typing import Any

from pyghmi.ipmi.private import session as _session

RECHECK_S = 0.05  # worst case for an ordering this patch did not foresee


def _reply_waiting(myaddr: Any) -> bool:
    if myaddr is None:  # an undirected wait (pyghmi's event loop): any session with packets
        return bool(_session.sessionqueue)
    handlers = _session.Session.bmc_handlers.get(myaddr) or {}
    return any(getattr(s, "pktqueue", None) for s in list(handlers.values()))


def _io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
    evt = threading.Event()
    if evq is not None:
        evq.append(evt)
    deadline = timeout + _session._monotonic_time()
    _session.ioqueue.append((deadline, evt, myaddr))
    if _reply_waiting(myaddr):
        return
    if deadline < _session.selectdeadline:  # as pyghmi: break the I/O thread out of a long select
        wake = _session.iosockets[0]
        wake.sendto(b"\x01", (_session.myself, wake.getsockname()[1]))
    while not evt.wait(RECHECK_S):
        if _reply_waiting(myaddr) or _session._monotonic_time() >= deadline:
            return


def install() -> None:
    """Idempotent; called when the IPMI driver is imported, before any session exists."""
    _session.WAITING_SESSIONS = _session.KEEPALIVE_SESSIONS
    if getattr(_session._io_wait, "__module__", "") != __name__:
        _session._io_wait = _io_wait
