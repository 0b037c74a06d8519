"""A dry run of ``find … -delete`` that says what it would delete.

``find`` selects files with its predicates and ``-delete`` is the one action that changes
anything, so the same command with ``-print`` in its place lists exactly the files the real run
would delete, changing nothing. ``shell.run`` and ``ssh.run`` run that listing in their dry run
(after the allowlist accepted the real command), so an approver sees the files, not only the
command line.
"""

from __future__ import annotations

import posixpath

SHOWN_FILES = 20


def listing_argv(argv: list[str]) -> list[str] | None:
    """The read-only ``-print`` twin of a resolved ``find … -delete`` argv; None for anything else."""
    if not argv or posixpath.basename(argv[0]) != "find" or "-delete" not in argv[1:]:
        return None
    return [argv[0], *("-print" if arg == "-delete" else arg for arg in argv[1:])]


def listing_preview(where: str, command_line: str, exit_code: int, stdout: str, stderr: str, truncated: bool) -> str:
    """The dry run's words: the command, then the files it would delete (the first few, and a count)."""
    head = f"would run {where}: {command_line}"
    if exit_code != 0:
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {exit_code}"
        return f"{head}\ncould not list what it would delete: {detail}"
    files = [line for line in stdout.splitlines() if line.strip()]
    if not files:
        return f"{head}\nwould delete nothing: no file matches now"
    more = "+" if truncated else ""
    lines = [head, f"would delete {len(files)}{more} file{'s' if len(files) != 1 else ''}:"]
    lines += [f"  {path}" for path in files[:SHOWN_FILES]]
    if len(files) > SHOWN_FILES:
        lines.append(f"  … and {len(files) - SHOWN_FILES}{more} more")
    return "\n".join(lines)
