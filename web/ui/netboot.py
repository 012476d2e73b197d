"""The "Network boot" page: the DHCP subnets (with an edit form), reservations, the leases handed
out, the boot events (what each machine fetched, newest first, filterable by MAC) and the DNS
records.

Rendered from the same wire shapes the REST API sends (``web.routers.netboot``), so
``static/netboot.js`` can redraw the leases and events tables from ``GET /rest/dhcp/leases`` and
``GET /rest/boot-events`` with the same field names (it does so every few seconds). Every change
(edit a subnet, add or remove a reservation or DNS record) is a REST call from the browser with
the session cookie and CSRF header, as on the other pages; the REST API checks the role again.
Boot event details and host names come from the network: the template autoescapes them and the
script only ever sets ``textContent``.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from appliance.query import CollectionQuery, Condition, Op, SortKey
from appliance.repositories.server_hardware import ServerHardwareRepository
from appliance.roles import Role
from appliance.services.netboot import BOOT_CHOICES, DNS_TYPES, SUBNET_MODES, UNKNOWN_MAC_POLICIES, NetbootService
from web.routers.netboot import dns_record_public, event_public, lease_public, reservation_public, subnet_public
from web.ui.routes import PAGE_SIZE, UiRoute, view

router = APIRouter(route_class=UiRoute, include_in_schema=False)

REFRESH_S = 5  # how often netboot.js redraws the leases and events tables
BOOT_LABELS = {
    "netboot": "Network boot (the ramdisk)",
    "disk": "Local disk, through iPXE",
    "local": "Address only, no boot file",
    "none": "No answer at all",
}
UNKNOWN_LABELS = {
    "discovery": "Boot the discovery ramdisk",
    "address-only": "An address only",
    "ignore": "No answer",
}
_MAC_PART = re.compile(r"[0-9a-f:]{1,17}")


def mac_filter(text: str | None) -> tuple[str, str | None]:
    """The events filter box: (the normalised text, an error or None). Any part of a MAC matches."""
    value = (text or "").strip().lower().replace("-", ":")
    if value and not _MAC_PART.fullmatch(value):
        return value, "Type a MAC address or part of one (hex digits and colons)."
    return value, None


@router.get("/ui/netboot")
def netboot_page(request: Request, mac: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    with view(request, Role.READ_ONLY) as v:
        service = NetbootService(v.db, v.ctx.clock)
        names, now = service.names_by_mac(), v.ctx.clock()
        leases = service.leases(CollectionQuery(count=PAGE_SIZE))
        mac_text, mac_error = mac_filter(mac)
        conditions = (Condition("mac", Op.MATCHES, f"%{mac_text}%"),) if mac_text and not mac_error else ()
        events = service.boot_events(CollectionQuery(count=PAGE_SIZE, conditions=conditions))
        servers = ServerHardwareRepository(v.db).page(CollectionQuery(sort=(SortKey("name"),))).members
        return v.render(
            "netboot.html", "netboot", title="Network boot",
            subnets=[subnet_public(s) for s in service.subnets()],
            reservations=[reservation_public(r) for r in service.reservations()],
            leases=[lease_public(lease, names, now) for lease in leases.members], lease_total=leases.total,
            events=[event_public(e) for e in events.members], event_total=events.total,
            mac=mac_text, mac_error=mac_error,
            records=[dns_record_public(r) for r in service.dns_records()],
            servers={f"/rest/server-hardware/{s.id}": s.name for s in servers},
            can_admin=v.may(Role.INFRASTRUCTURE_ADMINISTRATOR), page_size=PAGE_SIZE, refresh_s=REFRESH_S,
            modes=SUBNET_MODES, unknown_policies=UNKNOWN_MAC_POLICIES, unknown_labels=UNKNOWN_LABELS,
            boot_choices=BOOT_CHOICES, boot_labels=BOOT_LABELS, dns_types=DNS_TYPES,
        )
