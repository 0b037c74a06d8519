"""Who is acting: one actor model for every surface.

Chat identities (Slack user and user-group IDs, Discord user and role IDs) and API tokens are
mapped to roles by config, so the policy sees the same ``Actor`` whichever surface was used.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict


class Actor(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str  # stable identity: a configured identity name, or "slack:U123" for an unmapped user
    display: str
    roles: frozenset[str] = frozenset()
    via: str = "system"  # cli, api, slack, discord, system

    def has_any(self, roles: Iterable[str]) -> bool:
        return bool(self.roles.intersection(roles))


SYSTEM = Actor(id="system", display="Ooda", roles=frozenset({"system"}), via="system")


class IdentityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    display: str | None = None
    roles: list[str] = []
    api_token_env: str | None = None
    slack_users: list[str] = []
    discord_users: list[str] = []


class IdentityDirectory:
    """Resolves surface-specific ids to Actors. Group and role grants add to personal roles."""

    def __init__(
        self,
        identities: list[IdentityConfig],
        tokens: dict[str, str],
        slack_groups: dict[str, list[str]],
        discord_roles: dict[str, list[str]],
    ) -> None:
        self._by_id = {i.id: i for i in identities}
        self._tokens = tokens  # token value -> identity id; values never leave this object
        self._slack = {u: i for i in identities for u in i.slack_users}
        self._discord = {u: i for i in identities for u in i.discord_users}
        self._slack_groups = slack_groups
        self._discord_roles = discord_roles

    def _actor(self, ident: IdentityConfig, via: str, extra_roles: Iterable[str] = ()) -> Actor:
        return Actor(
            id=ident.id,
            display=ident.display or ident.id,
            roles=frozenset(ident.roles).union(extra_roles),
            via=via,
        )

    def by_id(self, identity_id: str, via: str = "cli") -> Actor | None:
        ident = self._by_id.get(identity_id)
        return self._actor(ident, via) if ident else None

    def from_token(self, token: str) -> Actor | None:
        for known, identity_id in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return self.by_id(identity_id, via="api")
        return None

    def from_slack(self, user_id: str, group_ids: Iterable[str] = (), name: str | None = None) -> Actor:
        granted = [r for g in group_ids for r in self._slack_groups.get(g, [])]
        ident = self._slack.get(user_id)
        if ident:
            return self._actor(ident, "slack", granted)
        return Actor(id=f"slack:{user_id}", display=name or user_id, roles=frozenset(granted), via="slack")

    def from_discord(self, user_id: str, role_ids: Iterable[str] = (), name: str | None = None) -> Actor:
        granted = [r for g in role_ids for r in self._discord_roles.get(str(g), [])]
        ident = self._discord.get(str(user_id))
        if ident:
            return self._actor(ident, "discord", granted)
        return Actor(id=f"discord:{user_id}", display=name or str(user_id), roles=frozenset(granted), via="discord")
