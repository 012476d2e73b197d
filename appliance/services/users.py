"""Users: creation, roles, passwords, and the first-start Administrator."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from appliance.clock import Clock, system_clock
from appliance.errors import AlreadyExists, InvalidInput, LastAdministrator, NotFound
from appliance.models import User
from appliance.query import CollectionQuery
from appliance.repositories.base import Page
from appliance.repositories.users import SessionRepository, UserRepository
from appliance.roles import Role
from appliance.security import hash_password

log = logging.getLogger(__name__)

ADMINISTRATOR = "Administrator"  # OneView's default user, so HPE's SDK examples work as written
INITIAL_PASSWORD_FILE = "initial-admin-password"  # noqa: S105 - a file name


@dataclass(frozen=True)
class UserChanges:
    full_name: str | None = None
    email: str | None = None
    role: Role | None = None
    enabled: bool | None = None
    password: str | None = None


class UserService:
    def __init__(self, db: Session, clock: Clock = system_clock) -> None:
        self.users = UserRepository(db)
        self.sessions = SessionRepository(db)
        self.clock = clock

    def list(self, query: CollectionQuery) -> Page[User]:
        return self.users.page(query)

    def get(self, user_id: str) -> User:
        user = self.users.get(user_id) or self.users.by_name(user_id)
        if user is None:
            raise NotFound(kind="user", ident=user_id)
        return user

    def create(self, name: str, password: str, role: Role, full_name: str = "", email: str = "") -> User:
        name = name.strip()
        if not name or len(name) > 64 or any(c in name for c in "/\\:\x00"):
            raise InvalidInput(reason="user name must be 1-64 characters without / \\ or :")
        if self.users.by_name(name) is not None:
            raise AlreadyExists(kind="user", name=name)
        user = User(
            name=name,
            name_key=name.lower(),
            role=role.value,
            full_name=full_name,
            email=email,
            password_hash=hash_password(password),
            password_changed=self.clock(),
        )
        return self.users.add(user)

    def update(self, user_id: str, changes: UserChanges) -> User:
        user = self.get(user_id)
        demoting = changes.role is not None and changes.role != Role.INFRASTRUCTURE_ADMINISTRATOR
        disabling = changes.enabled is False
        if (demoting or disabling) and self._is_last_admin(user):
            raise LastAdministrator()
        if changes.full_name is not None:
            user.full_name = changes.full_name
        if changes.email is not None:
            user.email = changes.email
        if changes.role is not None:
            user.role = changes.role.value
        if changes.enabled is not None:
            user.enabled = changes.enabled
            if not changes.enabled:
                self.sessions.delete_for_user(user.id)
        if changes.password is not None:
            user.password_hash = hash_password(changes.password)
            user.password_changed = self.clock()
            # A new password ends every existing session of that user.
            self.sessions.delete_for_user(user.id)
        user.modified = self.clock()
        return user

    def delete(self, user_id: str) -> None:
        user = self.get(user_id)
        if self._is_last_admin(user):
            raise LastAdministrator()
        self.users.delete(user)

    def _is_last_admin(self, user: User) -> bool:
        return (
            user.role == Role.INFRASTRUCTURE_ADMINISTRATOR
            and user.enabled
            and self.users.count_enabled_with_role(Role.INFRASTRUCTURE_ADMINISTRATOR) <= 1
        )

    def ensure_administrator(self, password: str | None, home: Path) -> bool:
        """On first start (no users at all) create ``Administrator``.

        The password comes from ``INGOT_ADMIN_PASSWORD``; without one, a random password is written
        to ``INGOT_HOME/initial-admin-password`` (mode 0600) and only that path is logged.
        Returns whether the user was created.
        """
        if self.users.count() > 0:
            return False
        if password is None:
            password = secrets.token_urlsafe(18)
            target = home / INITIAL_PASSWORD_FILE
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
            log.warning("created user %s; its initial password is in %s", ADMINISTRATOR, target)
        else:
            log.info("created user %s from INGOT_ADMIN_PASSWORD", ADMINISTRATOR)
        self.create(ADMINISTRATOR, password, Role.INFRASTRUCTURE_ADMINISTRATOR, full_name="Administrator")
        return True
