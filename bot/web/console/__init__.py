"""The web console at ``/ui``: inbox, task timeline, audit, playbooks, policy and digest pages."""

from bot.web.console.web import Console

__all__ = ["Console"]
