"""store.url for PostgreSQL: one server or a primary with its standbys, never a password."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.store_url import check_store_url, store_target

TWO = "postgresql://ooda@db1:5432,db2:5432/ooda"


def target(url: str) -> str:
    return store_target(check_store_url(url), Path).describe()


def test_several_hosts_are_accepted_and_kept_in_order_with_read_write_by_default():
    assert target(TWO) == f"{TWO}?target_session_attrs=read-write"
    assert target(f"{TWO}?sslmode=require") == f"{TWO}?sslmode=require&target_session_attrs=read-write"
    assert target("postgres://ooda@[::1]:5432,db2,10.0.0.3:6432/ooda").endswith(
        "@[::1]:5432,db2,10.0.0.3:6432/ooda?target_session_attrs=read-write")


@pytest.mark.parametrize("attrs", ["read-write", "primary"])
def test_a_writable_target_session_attrs_given_is_kept_as_given(attrs):
    assert target(f"{TWO}?target_session_attrs={attrs}") == f"{TWO}?target_session_attrs={attrs}"


def test_one_host_is_left_as_written():
    # One server is the one server, whatever it is: nothing to choose between.
    assert target("postgresql://ooda@db.internal:5432/ooda") == "postgresql://ooda@db.internal:5432/ooda"


@pytest.mark.parametrize(("url", "names"), [
    ("postgresql://ooda:hunter2@db1:5432,db2:5432/ooda", "must not carry a password"),
    ("postgresql://ooda@db1,db2/ooda?target_session_attrs=read-write&password=hunter2", "must not carry a password"),
    ("postgresql://ooda@db1:5432,,db2/ooda", "'', which is not host or host:port"),
    ("postgresql://ooda@db1:5432,db2:port/ooda", "'db2:port', which is not host or host:port"),
    ("postgresql://ooda@db1,db2", "names a host and a database"),
    ("postgresql://ooda@/ooda", "names a host and a database"),
    (f"{TWO}?target_session_attrs=any", "target_session_attrs=any, which lets Ooda keep a server that cannot"),
    (f"{TWO}?target_session_attrs=prefer-standby", "use read-write"),
])
def test_a_bad_postgresql_url_is_refused_naming_what_is_wrong_and_never_echoing_a_password(url, names):
    with pytest.raises(ValueError) as refused:
        check_store_url(url)
    assert names in str(refused.value) and "hunter2" not in str(refused.value)
