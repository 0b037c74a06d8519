"""Ooda: an async chat-ops bot running observe -> orient -> decide -> act -> review over playbooks."""

__version__ = "0.1.0"
