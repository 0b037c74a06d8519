"""Evidence bounded per item for chat, so every item shows and none pushes the others out.

Chat renderers fill a fixed evidence budget item by item and count what does not fit as
"… N more". One long item (a 2,000-character alert title, a Prometheus graph link of 700
characters, a log excerpt) used to fill that budget on its own and hide every other item.
Before a proposal goes to chat, each item is now cut to a fair share of the budget: short items
keep their full text, long ones share what is left equally. A cut item ends with a pointer to the
whole text (``ooda show N``), and a link too long for its share is left out of the message
(cutting a URL would break it; ``ooda show`` has it). An item's meaning (what the playbook's
evidence step shows, "share of the filesystem still free") counts toward its size as the renderers
show it; a cut item leaves its meaning out first, so its share goes to what was found rather than
to a description of it. ``ooda show`` and the API keep the full evidence: only the chat copy is cut.

The budget is below the smallest renderer's evidence budget (Discord's embed field, 1,024
characters, less its own pointer) with room for the escaping Slack's mrkdwn adds.
"""

from __future__ import annotations

from bot.loop.planner import EARLIER_LINES_CUT
from bot.model.proposals import Evidence, Proposal

CHAT_EVIDENCE_BUDGET = 800
ITEM_OVERHEAD = 12  # bullet, separators, line breaks and quote marks a renderer adds per item
LINE_OVERHEAD = 4  # each further line of a snippet is indented ("    ") or quoted ("> ") again
# The planner keeps the end of a log or a command's output (what a crashed container wrote last)
# and marks the cut with this; a fitted copy keeps the end too.
SPREAD_ROUNDS = 3  # passes that hand what dropped links and short items left over to the cut items
MIN_SHARE = 60  # below this an item would say nothing; more items than fit are counted by the renderer
TITLE_SHARE = 0.4  # of an item's share, at most this much for its title
LINK_ROOM = 80  # a link is kept only when this much of the snippet (or all of a shorter one) fits beside it
SNIPPET_MAX = 300  # the renderers cut a longer snippet themselves, and would cut the pointer off


def more_pointer(task_id: int) -> str:
    return f"(more: `ooda show {task_id}`)"


def item_size(evidence: Evidence) -> int:
    """Characters the item takes in a chat message, before any cut."""
    meaning = len(evidence.meaning) + 3 if evidence.meaning else 0  # shown as " (meaning)"
    snippet = evidence.snippet.strip()
    return (len(evidence.kind) + len(evidence.title) + meaning + len(evidence.url or "")
            + len(snippet) + LINE_OVERHEAD * snippet.count("\n") + ITEM_OVERHEAD)


def fair_shares(sizes: list[int], budget: int) -> list[int]:
    """Each item's share of ``budget``: items smaller than an equal share keep their size, and the
    rest of the budget is split equally among the larger ones (never below ``MIN_SHARE``)."""
    shares = list(sizes)
    remaining, left = budget, len(sizes)
    for index in sorted(range(len(sizes)), key=sizes.__getitem__):
        equal = max(MIN_SHARE, remaining // left) if left else 0
        shares[index] = min(sizes[index], equal)
        remaining -= shares[index]
        left -= 1
    return shares


def _cut_words(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at a word boundary when there is one nearby."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space] if space > limit * 0.6 else cut


def _tail(text: str, limit: int) -> str:
    """The last ``limit`` characters of ``text``, from a line's (or a word's) start when one is near."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    start = tail.find("\n") + 1 or tail.find(" ") + 1
    return tail[start:] if 0 < start < limit * 0.4 else tail


def _fit_item(evidence: Evidence, share: int, pointer: str) -> Evidence:
    room = share - len(evidence.kind) - ITEM_OVERHEAD
    title = evidence.title
    if len(title) > room * TITLE_SHARE and item_size(evidence) > share:
        title = _cut_words(title, max(20, int(room * TITLE_SHARE) - 1)) + "…"
    room -= len(title)
    snippet = evidence.snippet.strip()
    # A link goes in only with room left for what was found: a link over a cut-off snippet tells less.
    url = evidence.url if evidence.url and len(evidence.url) + min(len(snippet), LINK_ROOM) <= room else None
    room = min(room - len(url or ""), SNIPPET_MAX)
    if len(snippet) > SNIPPET_MAX or item_size(evidence.model_copy(update={"title": title, "url": url,
                                                                          "meaning": ""})) > share:
        keep = max(0, room - len(pointer) - 2)
        if snippet.startswith(EARLIER_LINES_CUT):  # a log's tail: its last lines are what matter
            tail = _tail(snippet, keep)
            snippet = f"… {_tail(tail, keep - LINE_OVERHEAD * tail.count(chr(10)))} {pointer}"
        else:
            head = _cut_words(snippet, keep)
            snippet = f"{_cut_words(head, keep - LINE_OVERHEAD * head.count(chr(10)))}… {pointer}"
    elif title != evidence.title or url != evidence.url:
        # The snippet is whole: the pointer says where the rest (the whole title, the link) is.
        snippet = f"{snippet} {pointer}" if snippet else pointer
    return evidence.model_copy(update={"title": title, "url": url, "snippet": snippet, "meaning": ""})


def _fitted(evidence: list[Evidence], sizes: list[int], budget: int, pointer: str) -> list[Evidence]:
    return [ev if share >= size else _fit_item(ev, share, pointer)
            for ev, size, share in zip(evidence, sizes, fair_shares(sizes, budget), strict=True)]


def fit_evidence(proposal: Proposal, budget: int = CHAT_EVIDENCE_BUDGET) -> Proposal:
    """``proposal`` with each evidence item cut to its share of ``budget``; the same object when
    everything fits.

    A cut item often takes less than its share (a link too long for it is left out whole, a meaning
    dropped), so the shares are handed out again with what was left over, as long as the fitted
    items still fit ``budget``.
    """
    sizes = [item_size(ev) for ev in proposal.evidence]
    if sum(sizes) <= budget:
        return proposal
    pointer = more_pointer(proposal.task_id)
    fitted = _fitted(proposal.evidence, sizes, budget, pointer)
    granted = budget
    for _ in range(SPREAD_ROUNDS):
        spare = budget - sum(item_size(ev) for ev in fitted)
        if spare < len(fitted):  # less than a character for each item
            break
        granted += spare
        wider = _fitted(proposal.evidence, sizes, granted, pointer)
        if sum(item_size(ev) for ev in wider) > budget:
            break
        fitted = wider
    return proposal.model_copy(update={"evidence": fitted})
