"""Network boot over REST: the DHCP subnets and reservations, the leases handed out, the DNS
records Ingot serves, and the boot events that show what each machine fetched.

============================  =====================  ==========================================
path                          methods                notes
============================  =====================  ==========================================
``/rest/dhcp/subnets``        GET, POST              POST answers 201 with the subnet
``/rest/dhcp/subnets/{id}``   GET, PUT, DELETE       PUT changes the fields given (If-Match)
``/rest/dhcp/reservations``   GET, POST              one per MAC: address, host name, boot
``/rest/dhcp/reservations/…`` GET, PUT, DELETE
``/rest/dhcp/leases``         GET                    what the DHCP server handed out (read only)
``/rest/dhcp/leases/{ip}``    GET
``/rest/boot-events``         GET                    newest first
``/rest/boot-events/{id}``    GET
``/rest/dns/records``         GET, POST              record type in ``recordType``
``/rest/dns/records/{id}``    GET, PUT, DELETE
============================  =====================  ==========================================

Everyone signed in may read; changes need the Infrastructure administrator role, as enrolling or
removing server hardware does (they decide what machines on the wire boot).

Validation lives in :mod:`appliance.services.netboot`; the bodies here only refuse unknown fields
(so a typo is a 400, not a silently ignored setting) and tolerate the read-only fields a
GET-modify-PUT client echoes back. After every successful change the running boot services are
nudged to reload (:func:`_changed`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request, Response
from pydantic import Field

from appliance.context import AppContext
from appliance.errors import InvalidInput, NotFound
from appliance.models import BootEvent, DhcpLease, DnsRecord, Reservation, Subnet
from appliance.query import CollectionQuery, Condition, Op
from appliance.services.netboot import NetbootService
from appliance.services.server_hardware import server_uri
from web.collection import QueryDep, envelope
from web.deps import Admin, AppDep, DbDep, ReadOnly
from web.etag import check_if_match, resource_response
from web.schemas.common import Strict, resource_header, ts

router = APIRouter(tags=["network-boot"])

SUBNETS = "/rest/dhcp/subnets"
RESERVATIONS = "/rest/dhcp/reservations"
LEASES = "/rest/dhcp/leases"
EVENTS = "/rest/boot-events"
DNS_RECORDS = "/rest/dns/records"
DNS_RESOURCE_TYPE = "dns-record"


# --- on the wire -----------------------------------------------------------------------------------
def subnet_public(row: Subnet) -> dict[str, Any]:
    body = resource_header("dhcp-subnet", "dhcp-subnets", f"{SUBNETS}/{row.id}", row.id, row.name, row.etag,
                           row.created, row.modified)
    body.update({
        "network": row.network,
        "rangeFirst": row.range_first,
        "rangeLast": row.range_last,
        "router": row.router,
        "dnsServers": list(row.dns_servers or []),
        "domain": row.domain,
        "leaseTime": row.lease_time,
        "mode": row.mode,
        "unknownMacPolicy": row.unknown_mac,
    })
    return body


def reservation_public(row: Reservation) -> dict[str, Any]:
    body = resource_header("dhcp-reservation", "dhcp-reservations", f"{RESERVATIONS}/{row.id}", row.id,
                           row.hostname or row.mac, row.etag, row.created, row.modified)
    body.update({
        "mac": row.mac,
        "ip": row.ip,
        "hostname": row.hostname,
        "boot": row.boot,
        "serverHardwareUri": server_uri(row.server_hardware_id) if row.server_hardware_id else None,
    })
    return body


def lease_public(row: DhcpLease, names: dict[str, str], now: datetime) -> dict[str, Any]:
    return {
        "type": "dhcp-lease",
        "category": "dhcp-leases",
        "uri": f"{LEASES}/{row.ip}",
        "ip": row.ip,
        "mac": row.mac,
        "state": row.state,
        "expires": ts(row.expires),
        "updated": ts(row.updated),
        "hostname": names.get(row.mac),
        "active": row.state == "bound" and row.expires > now,
    }


def event_public(row: BootEvent) -> dict[str, Any]:
    return {
        "type": "boot-event",
        "category": "boot-events",
        "uri": f"{EVENTS}/{row.id}",
        "id": row.id,
        "at": ts(row.at),
        "mac": row.mac,
        "clientIp": row.client_ip,
        "service": row.service,
        "action": row.action,
        "detail": row.detail,
        "ok": row.ok,
    }


def dns_record_public(row: DnsRecord) -> dict[str, Any]:
    # ``type`` is the resource type, as on every resource; the record's own type is ``recordType``.
    body = resource_header(DNS_RESOURCE_TYPE, "dns-records", f"{DNS_RECORDS}/{row.id}", row.id, row.name, row.etag,
                           row.created, row.modified)
    body.update({"recordType": row.type, "value": row.value, "ttl": row.ttl})
    return body


# --- request bodies --------------------------------------------------------------------------------
# Field types are loose on purpose: the service checks every value and says what is wrong with it
# in its own words (``rangeFirst: 10.9.0.5 is not a host address of 10.0.0.0/24``).
class _Echoed(Strict):
    """Read-only fields a client may send back from a GET; ignored."""

    category: Any = None
    uri: Any = None
    id: Any = None
    e_tag: Any = Field(None, alias="eTag")
    created: Any = None
    modified: Any = None
    description: Any = None
    state: Any = None
    status: Any = None


class SubnetBody(_Echoed):
    type: Any = None
    name: Any = None
    network: Any = None
    range_first: Any = Field(None, alias="rangeFirst")
    range_last: Any = Field(None, alias="rangeLast")
    router: Any = None
    dns_servers: Any = Field(None, alias="dnsServers")
    domain: Any = None
    lease_time: Any = Field(None, alias="leaseTime")
    mode: Any = None
    unknown_mac_policy: Any = Field(None, alias="unknownMacPolicy")


class ReservationBody(_Echoed):
    type: Any = None
    name: Any = None  # the resource's display name (host name or MAC); ignored
    mac: Any = None
    ip: Any = None
    hostname: Any = None
    boot: Any = None
    server_hardware_uri: Any = Field(None, alias="serverHardwareUri")


class DnsRecordBody(_Echoed):
    name: Any = None
    record_type: Any = Field(None, alias="recordType")
    # Also accepted as ``type`` (A, CNAME, PTR); ``"type": "dns-record"`` echoed from a GET is ignored.
    type: Any = None
    value: Any = None
    ttl: Any = None


SUBNET_KEYS = ("name", "network", "rangeFirst", "rangeLast", "router", "dnsServers", "domain", "leaseTime", "mode",
               "unknownMacPolicy")
RESERVATION_KEYS = ("mac", "ip", "hostname", "boot", "serverHardwareUri")


def _given(body: Strict, keys: tuple[str, ...]) -> dict[str, Any]:
    """The service's fields the client actually sent (an explicit null included: it clears)."""
    sent = body.model_dump(by_alias=True, exclude_unset=True)
    return {key: sent[key] for key in keys if key in sent}


def _dns_given(body: DnsRecordBody) -> dict[str, Any]:
    sent = body.model_dump(by_alias=True, exclude_unset=True)
    given: dict[str, Any] = {key: sent[key] for key in ("name", "value", "ttl") if key in sent}
    if "recordType" in sent:
        given["type"] = sent["recordType"]
    elif "type" in sent and str(sent["type"]).lower() != DNS_RESOURCE_TYPE:
        given["type"] = sent["type"]
    return given


# --- helpers ---------------------------------------------------------------------------------------
def _service(db: DbDep, ctx: AppContext) -> NetbootService:
    return NetbootService(db, ctx.clock)


def _changed(background: BackgroundTasks, ctx: AppContext) -> None:
    """Nudge the boot services to re-read subnets, reservations and DNS records.

    As a background task, not here and now: ``DbDep`` commits when the handler returns, before the
    response is sent (scope="function"), and background tasks run after the response has gone. So
    the reload this wakes reads the committed change. Called inline, the reload (another thread,
    no debounce) could read the database before the commit and keep the old configuration until
    its next periodic pass. A failed request raises before this is reached, or in the commit,
    whose error response carries no background tasks: nothing is nudged for a change that did not
    happen.
    """
    background.add_task(ctx.netboot_changed.notify)


def _created(request: Request, body: dict[str, Any]) -> Response:
    response = resource_response(request, body, status_code=201)
    response.headers["Location"] = body["uri"]  # also what the audit row names as the resource
    return response


# --- subnets ---------------------------------------------------------------------------------------
@router.get(SUBNETS)
def list_subnets(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    page = _service(db, ctx).subnet_page(params.query)
    return envelope(SUBNETS, "dhcp-subnets", "DhcpSubnetCollection", page, subnet_public, params)


@router.post(SUBNETS, status_code=201)
def create_subnet(body: SubnetBody, request: Request, background: BackgroundTasks, db: DbDep, ctx: AppDep,
                  _: Admin) -> Response:
    given = _given(body, SUBNET_KEYS)
    if given.get("network") is None:
        raise InvalidInput(reason="network: required (e.g. 10.0.0.0/24)")
    row = _service(db, ctx).create_subnet(given)
    request.state.audit_message = f"created DHCP subnet {row.name} ({row.network})"
    _changed(background, ctx)
    return _created(request, subnet_public(row))


@router.get(SUBNETS + "/{subnet_id}")
def get_subnet(subnet_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    return resource_response(request, subnet_public(_service(db, ctx).subnet(subnet_id)))


@router.put(SUBNETS + "/{subnet_id}")
def update_subnet(subnet_id: str, body: SubnetBody, request: Request, background: BackgroundTasks, db: DbDep,
                  ctx: AppDep, _: Admin) -> Response:
    service = _service(db, ctx)
    check_if_match(request, service.subnet(subnet_id).etag)
    row = service.update_subnet(subnet_id, _given(body, SUBNET_KEYS))
    request.state.audit_message = f"changed DHCP subnet {row.name}"
    _changed(background, ctx)
    return resource_response(request, subnet_public(row))


@router.delete(SUBNETS + "/{subnet_id}", status_code=204)
def delete_subnet(subnet_id: str, request: Request, background: BackgroundTasks, db: DbDep, ctx: AppDep,
                  _: Admin) -> Response:
    service = _service(db, ctx)
    row = service.subnet(subnet_id)
    check_if_match(request, row.etag)
    request.state.audit_message = f"deleted DHCP subnet {row.name}"
    service.delete_subnet(subnet_id)
    _changed(background, ctx)
    return Response(status_code=204)


# --- reservations ----------------------------------------------------------------------------------
@router.get(RESERVATIONS)
def list_reservations(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    page = _service(db, ctx).reservation_page(params.query)
    return envelope(RESERVATIONS, "dhcp-reservations", "DhcpReservationCollection", page, reservation_public, params)


@router.post(RESERVATIONS, status_code=201)
def create_reservation(body: ReservationBody, request: Request, background: BackgroundTasks, db: DbDep,
                       ctx: AppDep, _: Admin) -> Response:
    row = _service(db, ctx).create_reservation(_given(body, RESERVATION_KEYS))
    request.state.audit_message = f"reserved {row.mac}" + (f" ({row.ip})" if row.ip else "")
    _changed(background, ctx)
    return _created(request, reservation_public(row))


@router.get(RESERVATIONS + "/{reservation_id}")
def get_reservation(reservation_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    return resource_response(request, reservation_public(_service(db, ctx).reservation(reservation_id)))


@router.put(RESERVATIONS + "/{reservation_id}")
def update_reservation(reservation_id: str, body: ReservationBody, request: Request, background: BackgroundTasks,
                       db: DbDep, ctx: AppDep, _: Admin) -> Response:
    service = _service(db, ctx)
    check_if_match(request, service.reservation(reservation_id).etag)
    row = service.update_reservation(reservation_id, _given(body, RESERVATION_KEYS))
    request.state.audit_message = f"changed the reservation of {row.mac}"
    _changed(background, ctx)
    return resource_response(request, reservation_public(row))


@router.delete(RESERVATIONS + "/{reservation_id}", status_code=204)
def delete_reservation(reservation_id: str, request: Request, background: BackgroundTasks, db: DbDep, ctx: AppDep,
                       _: Admin) -> Response:
    service = _service(db, ctx)
    row = service.reservation(reservation_id)
    check_if_match(request, row.etag)
    request.state.audit_message = f"deleted the reservation of {row.mac}"
    service.delete_reservation(reservation_id)
    _changed(background, ctx)
    return Response(status_code=204)


# --- leases (read only: the DHCP server writes them) -------------------------------------------------
@router.get(LEASES)
def list_leases(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    service = _service(db, ctx)
    page = service.leases(params.query)
    names, now = service.names_by_mac(), ctx.clock()
    return envelope(LEASES, "dhcp-leases", "DhcpLeaseCollection", page, lambda r: lease_public(r, names, now),
                    params)


@router.get(LEASES + "/{ip}")
def get_lease(ip: str, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    service = _service(db, ctx)
    found = service.leases(CollectionQuery(count=1, conditions=(Condition("ip", Op.EQ, ip),))).members
    if not found:
        raise NotFound(kind="DHCP lease", ident=ip)
    return lease_public(found[0], service.names_by_mac(), ctx.clock())


# --- boot events (read only: the boot services write them) -------------------------------------------
@router.get(EVENTS)
def list_boot_events(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    page = _service(db, ctx).boot_events(params.query)
    return envelope(EVENTS, "boot-events", "BootEventCollection", page, event_public, params)


@router.get(EVENTS + "/{event_id}")
def get_boot_event(event_id: str, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    if not event_id.isdigit():
        raise NotFound(kind="boot event", ident=event_id[:64])
    found = _service(db, ctx).boot_events(
        CollectionQuery(count=1, conditions=(Condition("id", Op.EQ, event_id),))).members
    if not found:
        raise NotFound(kind="boot event", ident=event_id)
    return event_public(found[0])


# --- DNS records -----------------------------------------------------------------------------------
@router.get(DNS_RECORDS)
def list_dns_records(params: QueryDep, db: DbDep, ctx: AppDep, _: ReadOnly) -> dict[str, Any]:
    page = _service(db, ctx).dns_record_page(params.query)
    return envelope(DNS_RECORDS, "dns-records", "DnsRecordCollection", page, dns_record_public, params)


@router.post(DNS_RECORDS, status_code=201)
def create_dns_record(body: DnsRecordBody, request: Request, background: BackgroundTasks, db: DbDep, ctx: AppDep,
                      _: Admin) -> Response:
    row = _service(db, ctx).create_dns_record(_dns_given(body))
    request.state.audit_message = f"added DNS record {row.name} {row.type} {row.value}"
    _changed(background, ctx)
    return _created(request, dns_record_public(row))


@router.get(DNS_RECORDS + "/{record_id}")
def get_dns_record(record_id: str, request: Request, db: DbDep, ctx: AppDep, _: ReadOnly) -> Response:
    return resource_response(request, dns_record_public(_service(db, ctx).dns_record(record_id)))


@router.put(DNS_RECORDS + "/{record_id}")
def update_dns_record(record_id: str, body: DnsRecordBody, request: Request, background: BackgroundTasks,
                      db: DbDep, ctx: AppDep, _: Admin) -> Response:
    service = _service(db, ctx)
    current = service.dns_record(record_id)
    check_if_match(request, current.etag)
    # Re-check the whole record, not only the fields sent: changing CNAME to A must bring the
    # value under the A rules (an address), even when the value itself was not resent.
    merged = {"name": current.name, "type": current.type, "value": current.value, "ttl": current.ttl,
              **_dns_given(body)}
    row = service.update_dns_record(record_id, merged)
    request.state.audit_message = f"changed DNS record {row.name} {row.type}"
    _changed(background, ctx)
    return resource_response(request, dns_record_public(row))


@router.delete(DNS_RECORDS + "/{record_id}", status_code=204)
def delete_dns_record(record_id: str, request: Request, background: BackgroundTasks, db: DbDep, ctx: AppDep,
                      _: Admin) -> Response:
    service = _service(db, ctx)
    row = service.dns_record(record_id)
    check_if_match(request, row.etag)
    request.state.audit_message = f"deleted DNS record {row.name} {row.type} {row.value}"
    service.delete_dns_record(record_id)
    _changed(background, ctx)
    return Response(status_code=204)
