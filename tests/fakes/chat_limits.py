"""Slack's Block Kit and Discord's message limits, checked by the fakes on every message a test produces.

The real platforms refuse a message over a limit (Slack ``invalid_blocks``, Discord 400 with code
50035 "Invalid Form Body"), so the fakes refuse it the same way and remember it: a fake that saw
one fails the test when it shuts down, so no test can pass while producing a message the real
platform would reject. The numbers are the documented limits (api.slack.com/reference/block-kit,
discord.com/developers/docs/resources/message).
"""

from __future__ import annotations

import json
from typing import Any

SLACK_TEXT_MAX = 40_000  # chat.postMessage's text; Slack truncates past it
SLACK_BLOCKS_MAX = 50  # in a message; 100 in a modal
SLACK_MODAL_BLOCKS_MAX = 100
SECTION_TEXT_MAX = 3000
SECTION_FIELDS_MAX = 10
FIELD_TEXT_MAX = 2000
HEADER_TEXT_MAX = 150
CONTEXT_ELEMENTS_MAX = 10
ACTIONS_ELEMENTS_MAX = 25
BUTTON_TEXT_MAX = 75
BUTTON_VALUE_MAX = 2000
ID_MAX = 255  # action_id and block_id

DISCORD_CONTENT_MAX = 2000
DISCORD_EMBEDS_MAX = 10
EMBED_TITLE_MAX = 256
EMBED_DESCRIPTION_MAX = 4096
EMBED_FIELDS_MAX = 25
EMBED_FIELD_NAME_MAX = 256
EMBED_FIELD_VALUE_MAX = 1024
EMBED_FOOTER_MAX = 2048
EMBED_TOTAL_MAX = 6000
ROWS_MAX = 5
ROW_COMPONENTS_MAX = 5
BUTTON_LABEL_MAX = 80
CUSTOM_ID_MAX = 100


def _loads(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _text_len(obj: Any) -> int:
    return len(obj.get("text", "")) if isinstance(obj, dict) else 0


def _block_problems(blocks: list[dict[str, Any]], where: str) -> list[str]:
    problems = []
    for i, block in enumerate(blocks):
        at = f"{where} block {i} ({block.get('type')})"
        if len(block.get("block_id", "")) > ID_MAX:
            problems.append(f"{at}: block_id over {ID_MAX}")
        kind = block.get("type")
        if kind == "section":
            if _text_len(block.get("text")) > SECTION_TEXT_MAX:
                problems.append(f"{at}: text {_text_len(block.get('text'))} > {SECTION_TEXT_MAX}")
            fields = block.get("fields") or []
            if len(fields) > SECTION_FIELDS_MAX:
                problems.append(f"{at}: {len(fields)} fields > {SECTION_FIELDS_MAX}")
            problems += [f"{at}: field {j} {_text_len(f)} > {FIELD_TEXT_MAX}"
                         for j, f in enumerate(fields) if _text_len(f) > FIELD_TEXT_MAX]
            if not block.get("text") and not fields:
                problems.append(f"{at}: a section needs text or fields")
        elif kind == "header" and _text_len(block.get("text")) > HEADER_TEXT_MAX:
            problems.append(f"{at}: header {_text_len(block.get('text'))} > {HEADER_TEXT_MAX}")
        elif kind == "context" and len(block.get("elements", [])) > CONTEXT_ELEMENTS_MAX:
            problems.append(f"{at}: {len(block['elements'])} elements > {CONTEXT_ELEMENTS_MAX}")
        elif kind == "actions":
            elements = block.get("elements", [])
            if len(elements) > ACTIONS_ELEMENTS_MAX:
                problems.append(f"{at}: {len(elements)} elements > {ACTIONS_ELEMENTS_MAX}")
            for element in elements:
                if _text_len(element.get("text")) > BUTTON_TEXT_MAX:
                    problems.append(f"{at}: button text over {BUTTON_TEXT_MAX}")
                if len(element.get("value", "")) > BUTTON_VALUE_MAX:
                    problems.append(f"{at}: button value over {BUTTON_VALUE_MAX}")
                if len(element.get("action_id", "")) > ID_MAX:
                    problems.append(f"{at}: action_id over {ID_MAX}")
    return problems


def slack_problems(method: str, args: dict[str, Any]) -> list[str]:
    """Why Slack would refuse this Web API call's message or view; empty when it is within every limit."""
    problems: list[str] = []
    if method in {"chat.postMessage", "chat.update", "chat.postEphemeral"} or method == "response_url":
        text = args.get("text") or ""
        if len(text) > SLACK_TEXT_MAX:
            problems.append(f"{method}: text {len(text)} > {SLACK_TEXT_MAX}")
        blocks = _loads(args.get("blocks")) or []
        if len(blocks) > SLACK_BLOCKS_MAX:
            problems.append(f"{method}: {len(blocks)} blocks > {SLACK_BLOCKS_MAX}")
        if not text and not blocks and method != "chat.update":
            problems.append(f"{method}: no text and no blocks")
        problems += _block_problems(blocks, method)
    if method in {"views.open", "views.update", "views.push"}:
        view = _loads(args.get("view")) or {}
        blocks = view.get("blocks", [])
        if len(blocks) > SLACK_MODAL_BLOCKS_MAX:
            problems.append(f"{method}: {len(blocks)} blocks > {SLACK_MODAL_BLOCKS_MAX}")
        if len((_loads(view.get("title")) and view["title"].get("text", "")) or "") > 24:
            problems.append(f"{method}: title over 24")
        problems += _block_problems(blocks, method)
    return problems


def embed_size(embed: dict[str, Any]) -> int:
    """What Discord counts towards the 6000-character limit of an embed."""
    fields = embed.get("fields", [])
    texts = [embed.get("title", ""), embed.get("description", ""), embed.get("footer", {}).get("text", ""),
             embed.get("author", {}).get("name", "")]
    return sum(map(len, texts)) + sum(len(f["name"]) + len(f["value"]) for f in fields)


def discord_problems(body: Any) -> list[str]:
    """Why Discord would refuse this message body; empty when it is within every limit."""
    if not isinstance(body, dict):
        return []
    data = body.get("data") if isinstance(body.get("data"), dict) else body  # an interaction callback
    problems: list[str] = []
    content = data.get("content") or ""
    if len(content) > DISCORD_CONTENT_MAX:
        problems.append(f"content {len(content)} > {DISCORD_CONTENT_MAX}")
    embeds = data.get("embeds") or []
    if len(embeds) > DISCORD_EMBEDS_MAX:
        problems.append(f"{len(embeds)} embeds > {DISCORD_EMBEDS_MAX}")
    for i, embed in enumerate(embeds):
        checks = [("title", len(embed.get("title", "")), EMBED_TITLE_MAX),
                  ("description", len(embed.get("description", "")), EMBED_DESCRIPTION_MAX),
                  ("footer", len(embed.get("footer", {}).get("text", "")), EMBED_FOOTER_MAX),
                  ("fields", len(embed.get("fields", [])), EMBED_FIELDS_MAX),
                  ("total", embed_size(embed), EMBED_TOTAL_MAX)]
        problems += [f"embed {i} {name} {n} > {limit}" for name, n, limit in checks if n > limit]
        for j, field in enumerate(embed.get("fields", [])):
            if len(field.get("name", "")) > EMBED_FIELD_NAME_MAX or not field.get("name"):
                problems.append(f"embed {i} field {j} name empty or over {EMBED_FIELD_NAME_MAX}")
            if len(field.get("value", "")) > EMBED_FIELD_VALUE_MAX or not field.get("value"):
                problems.append(f"embed {i} field {j} value empty or over {EMBED_FIELD_VALUE_MAX}")
    rows = data.get("components") or []
    if len(rows) > ROWS_MAX:
        problems.append(f"{len(rows)} component rows > {ROWS_MAX}")
    for row in rows:
        items = row.get("components", [])
        if len(items) > ROW_COMPONENTS_MAX:
            problems.append(f"a row of {len(items)} components > {ROW_COMPONENTS_MAX}")
        for item in items:
            if len(item.get("label", "") or "") > BUTTON_LABEL_MAX:
                problems.append(f"label over {BUTTON_LABEL_MAX}")
            if len(item.get("custom_id", "") or "") > CUSTOM_ID_MAX:
                problems.append(f"custom_id over {CUSTOM_ID_MAX}")
    return problems
