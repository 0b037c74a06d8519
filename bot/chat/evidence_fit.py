"""Evidence bounded per item for chat, so every item shows and none pushes the others out.

Chat renderers fill a fixed evidence budget item by item and count what does not fit as
"… N more". One long item (a 2,000-character alert title, a Prometheus graph link of 700
characters, a log excerpt) used to fill that budget on its own and hide every other item.
Before a proposal goes to chat, each item is now cut to a fair share of the budget: short items
keep their full text, long ones share what is left equally. A cut item ends with a pointer to the
whole text (``ooda show N``), and a link too long for its share is left out of the message
(cutting a URL would break it; ``ooda show`` has it). ``ooda show`` and the API keep the full
evidence: only the chat copy is cut.

The budget is below the smallest renderer's evidence budget (Discord's embed field, 1,024
characters, less its own pointer) with room for the escaping Slack's mrkdwn adds.
"""

from __future__ import annotations

from bot.model.proposals import Evidence, Proposal

CHAT_EVIDENCE_BUDGET = 800
ITEM_OVERHEAD = 12  # bullet, separators, line breaks and quote marks a renderer adds per item
MIN_SHARE = 60  # below this an item would say nothing; more items than fit are counted by the renderer
TITLE_SHARE = 0.4  # of an item's share, at most this much for its title
SNIPPET_MAX = 300  # the renderers cut a longer snippet themselves, and would cut the pointer off


def more_pointer(task_id: int) -> str:
    return f"(more: `ooda show {task_id}`)"


def item_size(evidence: Evidence) -> int:
    """Characters the item takes in a chat message, before any cut."""
    return (len(evidence.kind) + len(evidence.title) + len(evidence.url or "") + len(evidence.snippet.strip())
            + ITEM_OVERHEAD)


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


def _fit_item(evidence: Evidence, share: int, pointer: str) -> Evidence:
    room = share - len(evidence.kind) - ITEM_OVERHEAD
    title = evidence.title
    if len(title) > room * TITLE_SHARE and item_size(evidence) > share:
        title = _cut_words(title, max(20, int(room * TITLE_SHARE) - 1)) + "…"
    room -= len(title)
    url = evidence.url if evidence.url and len(evidence.url) <= room - 20 else None
    room = min(room - len(url or ""), SNIPPET_MAX)
    snippet = evidence.snippet.strip()
    cut = title != evidence.title or url != evidence.url
    if len(snippet) > room:
        snippet = _cut_words(snippet, max(0, room - len(pointer) - 2))
        cut = True
    if cut:
        snippet = f"{snippet}… {pointer}" if snippet else pointer
    return evidence.model_copy(update={"title": title, "url": url, "snippet": snippet})


def fit_evidence(proposal: Proposal, budget: int = CHAT_EVIDENCE_BUDGET) -> Proposal:
    """``proposal`` with each evidence item cut to its share of ``budget``; the same object when
    everything fits."""
    sizes = [item_size(ev) for ev in proposal.evidence]
    if sum(sizes) <= budget:
        return proposal
    pointer = more_pointer(proposal.task_id)
    fitted = [ev if share >= size else _fit_item(ev, share, pointer)
              for ev, size, share in zip(proposal.evidence, sizes, fair_shares(sizes, budget), strict=True)]
    return proposal.model_copy(update={"evidence": fitted})
