"""Roles, ordered by what they may do. Every route names the least role it needs.

- ``Read only``: read everything except users and the audit log.
- ``Operator``: also runs operations (tasks, power, deploy, alerts) but manages no users or settings.
- ``Infrastructure administrator``: everything (OneView's name for the all-powerful role).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    READ_ONLY = "Read only"
    OPERATOR = "Operator"
    INFRASTRUCTURE_ADMINISTRATOR = "Infrastructure administrator"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, required: Role) -> bool:
        return self.rank >= required.rank


_RANK = {Role.READ_ONLY: 0, Role.OPERATOR: 1, Role.INFRASTRUCTURE_ADMINISTRATOR: 2}
