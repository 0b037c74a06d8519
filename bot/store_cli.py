"""The store's commands: ``ooda migrate`` and ``ooda store copy``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

from bot.errors import BotError

MIGRATE_HELP = "bring the configured store to this version's schema (serve also does it at start)"
MIGRATE_EXAMPLE = "example:\n  ooda migrate --config /etc/ooda/config.yaml"
COPY_HELP = "copy a SQLite store into an empty PostgreSQL database (ids, signals and audit chain unchanged)"
COPY_EXAMPLE = ("example, with the server stopped:\n"
                "  OODA_PG_PASSWORD=... ooda store copy --from sqlite:///data/ooda.db \\\n"
                "      --to postgresql://ooda@db.internal:5432/ooda --password-env OODA_PG_PASSWORD\n"
                "then set store.url (and store.password_env) in the config and run `ooda audit verify`.")


def cmd_migrate(args: argparse.Namespace) -> int:
    from bot.config import load_settings
    from bot.store_admin import migrate

    settings, _ = load_settings(args.config)
    done = asyncio.run(migrate(settings, os.environ))
    print(json.dumps({"store": done}) if args.json else done)
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from bot.store_admin import copy_store
    from bot.store_url import check_store_url

    for flag, url in (("--from", args.source), ("--to", args.target)):
        try:
            check_store_url(url)
        except ValueError as exc:
            raise BotError(f"{flag}: {exc}") from None
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            raise BotError(f"--password-env names {args.password_env}, which is not set")
    copied = asyncio.run(copy_store(args.source, args.target, password=password))
    if args.json:
        print(json.dumps({"copied": copied}))
    else:
        print("copied " + ", ".join(f"{n} {table}" for table, n in copied.items())
              + "; check the copy with `ooda audit verify` once store.url points at it")
    return 0


def add_store_commands(add: Callable[[str, Any, str], argparse.ArgumentParser],
                       nested: argparse.ArgumentParser) -> None:
    p = add("migrate", cmd_migrate, MIGRATE_HELP)
    p.description, p.epilog, p.formatter_class = MIGRATE_HELP, MIGRATE_EXAMPLE, argparse.RawDescriptionHelpFormatter
    p = add("store", cmd_store, "store administration: copy a store to PostgreSQL")
    ssub = p.add_subparsers(dest="store_command", required=True)
    c = ssub.add_parser("copy", parents=[nested], help=COPY_HELP, description=COPY_HELP, epilog=COPY_EXAMPLE,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--from", dest="source", required=True, metavar="URL", help="sqlite:///path/to/ooda.db")
    c.add_argument("--to", dest="target", required=True, metavar="URL", help="postgresql://user@host:5432/db")
    c.add_argument("--password-env", metavar="NAME", help="the environment variable holding the PostgreSQL password")
