"""Playbooks: the YAML schema, its static checks, trigger matching, sandboxed templates, param checks and cron lines."""
