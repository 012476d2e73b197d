"""Queries for server hardware."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.models import ServerHardware
from appliance.query import CollectionQuery
from appliance.repositories.base import Field, Kind, Page, paged

SERVER_HARDWARE_FIELDS = {
    "name": Field(ServerHardware.name, case_insensitive=True),
    "state": Field(ServerHardware.state),
    "status": Field(ServerHardware.status),
    "powerState": Field(ServerHardware.power_state),
    "driver": Field(ServerHardware.driver),
    "model": Field(ServerHardware.model, case_insensitive=True),
    "serialNumber": Field(ServerHardware.serial_number, case_insensitive=True),
    "uuid": Field(ServerHardware.uuid, case_insensitive=True),
    "mpHostInfo.mpHostName": Field(ServerHardware.address, case_insensitive=True),
    "created": Field(ServerHardware.created, Kind.TIME),
    "modified": Field(ServerHardware.modified, Kind.TIME),
}


class ServerHardwareRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def page(self, query: CollectionQuery) -> Page[ServerHardware]:
        return paged(self.db, select(ServerHardware), query, SERVER_HARDWARE_FIELDS,
                     (ServerHardware.name, ServerHardware.id))

    def get(self, server_id: str, *, for_update: bool = False) -> ServerHardware | None:
        if for_update:
            return self.db.scalars(
                select(ServerHardware).where(ServerHardware.id == server_id).with_for_update()
            ).first()
        return self.db.get(ServerHardware, server_id)

    def by_name(self, name: str) -> ServerHardware | None:
        return self.db.scalars(select(ServerHardware).where(ServerHardware.name == name)).first()

    def by_bmc(self, address: str, port: int) -> ServerHardware | None:
        return self.db.scalars(
            select(ServerHardware).where(ServerHardware.address == address, ServerHardware.port == port)
        ).first()

    def all(self, states: Sequence[str] | None = None) -> list[ServerHardware]:
        stmt = select(ServerHardware).order_by(ServerHardware.name)
        if states is not None:
            stmt = stmt.where(ServerHardware.state.in_(states))
        return list(self.db.scalars(stmt))

    def add(self, server: ServerHardware) -> ServerHardware:
        self.db.add(server)
        self.db.flush()
        return server

    def delete(self, server: ServerHardware) -> None:
        self.db.delete(server)
        self.db.flush()
