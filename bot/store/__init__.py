"""Persistence: the ports by concept, the SQLite backend (the embedded default) and the PostgreSQL
one, migrations and leadership.
"""
