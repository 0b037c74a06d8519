"""What happens when someone clicks a proposal button, submits a modal or types ``/ops`` on Discord.

Every path ends in ``bot.chat.commands.Commands`` with an ``Actor`` resolved from the Discord user id and
role ids, so the policy decides who may do what. Discord wants an answer within 3 s: handlers
defer first (ephemeral, so refusals stay between the bot and the person) and follow up when the
core is done. Modals are the exception: a modal must be the first answer, so Reject, Edit and
Confirm open theirs at once and the work happens on submit.

Button custom_ids carry the action and the task id (``ooda:approve:12``); the ``ProposalButton``
DynamicItem parses them back, so buttons on messages posted before a restart keep working.
"""

from __future__ import annotations

import asyncio
import shlex
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import discord
import structlog
from discord import app_commands

from adapters.chat import discord_forms
from adapters.chat.discord_embeds import CUSTOM_ID_TEMPLATE, buttons_for, custom_id
from bot.chat import chatops, wording
from bot.chat.commands import ActionResult, Commands
from bot.errors import ConfirmationRequired, UserError
from bot.model.proposals import MessageRef, Proposal
from bot.policy.identity import Actor, IdentityDirectory

if TYPE_CHECKING:
    from adapters.chat.discord import DiscordSurface

log = structlog.get_logger(__name__)

EPHEMERAL_MAX = 2000
SEEN_INTERACTIONS = 4096  # interaction ids remembered to answer a replay quietly
# Discord's answer to a second response: 40060 "already acknowledged", 10062 "Unknown interaction".
ALREADY_ANSWERED = frozenset({40060, 10062})
SHOW_TIMEOUT_S = 2.0  # a modal must be the first answer, within Discord's 3 s


class ProposalButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID_TEMPLATE):
    def __init__(self, action: str, task_id: int, label: str = "", style: discord.ButtonStyle = discord.ButtonStyle.secondary) -> None:  # noqa: E501
        super().__init__(discord.ui.Button(label=label or action.title(), style=style,
                                           custom_id=custom_id(action, task_id)))
        self.action = action
        self.task_id = task_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: Any, /) -> ProposalButton:
        return cls(match["action"], int(match["task"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        handler: Interactions = interaction.client.interactions  # type: ignore[attr-defined]
        await handler.on_button(interaction, self.action, self.task_id)


def to_view(proposal: Proposal) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action, label, style in buttons_for(proposal):
        view.add_item(ProposalButton(action, proposal.task_id, label, style))
    return view


def ref_of(message: discord.Message) -> MessageRef:
    thread_id = str(message.id) if message.thread is not None else None
    return MessageRef(surface="discord", channel=str(message.channel.id), message_id=str(message.id),
                      thread_id=thread_id)


class Interactions:
    """Turns Discord interactions into core commands and words the answers."""

    def __init__(self, surface: DiscordSurface, commands: Commands, identities: IdentityDirectory) -> None:
        self._surface = surface
        self._commands = commands
        self._identities = identities
        self._seen: OrderedDict[int, None] = OrderedDict()  # interaction ids answered, for replays

    def actor_of(self, interaction: discord.Interaction) -> Actor:
        user = interaction.user
        # Member.roles only lists roles the guild cache knows; a role we cannot see grants nothing.
        role_ids = [str(r.id) for r in user.roles] if isinstance(user, discord.Member) else []
        return self._identities.from_discord(str(user.id), role_ids, name=user.display_name)

    # -- answering -----------------------------------------------------------------------------

    async def _reply(self, interaction: discord.Interaction, text: str, *,
                     view: discord.ui.View | None = None, embed: discord.Embed | None = None) -> None:
        text = wording.truncate(text, EPHEMERAL_MAX)
        kwargs: dict[str, Any] = {"ephemeral": True, "allowed_mentions": discord.AllowedMentions.none()}
        if view is not None:
            kwargs["view"] = view
        if embed is not None:
            kwargs["embed"] = embed
        if interaction.response.is_done():
            await interaction.followup.send(text, **kwargs)
        else:
            await interaction.response.send_message(text, **kwargs)
        if view is not None:
            # Its buttons are DynamicItems, dispatched by custom_id; keeping the view would leak.
            view.stop()

    async def _guarded(self, interaction: discord.Interaction, what: str, task_id: int | None,
                       work: Callable[[Actor], Awaitable[None]]) -> None:
        """Run ``work`` for the actor; refusals and crashes become an ephemeral answer.

        This is the entry point of every interaction: discord.py runs each callback in a task of
        its own, so the correlation id bound here is on every line the interaction logs.
        """
        chatops.bind_chat_request("discord", f"discord-{interaction.id}")
        actor = self.actor_of(interaction)
        if interaction.id in self._seen:
            # The same interaction delivered again (a gateway replay after a resume): it was
            # answered once, and Discord accepts one answer per interaction. Nothing to do.
            log.info("discord.interaction_duplicate", what=what, task_id=task_id, actor=actor.id)
            return
        self._seen[interaction.id] = None
        if len(self._seen) > SEEN_INTERACTIONS:
            self._seen.popitem(last=False)
        log.info("discord.interaction", what=what, task_id=task_id, actor=actor.id)
        try:
            await work(actor)
        except ConfirmationRequired as exc:
            log.info("discord.confirmation_required", what=what, task_id=task_id, actor=actor.id)
            confirm = discord.ui.View(timeout=None)
            if task_id is not None:
                confirm.add_item(ProposalButton("confirm", task_id, "Confirm approval", discord.ButtonStyle.danger))
            await self._reply(interaction, wording.confirmation_needed(
                exc, f"To confirm, press Confirm approval below and type `{exc.phrase}` in the form."), view=confirm)
        except UserError as exc:
            log.info("discord.refused", what=what, task_id=task_id, actor=actor.id, reason=str(exc))
            await self._reply(interaction, wording.refusal(exc))
        except Exception as exc:
            if isinstance(exc, discord.HTTPException) and exc.code in ALREADY_ANSWERED:
                # Answered elsewhere already (another process, or a replay this one did not see):
                # a duplicate, not a failure, and there is nobody left to tell.
                log.info("discord.interaction_duplicate", what=what, task_id=task_id, actor=actor.id, code=exc.code)
                return
            correlation_id = chatops.bound_correlation_id()  # the id this line and the request's others carry
            log.exception("discord.interaction_failed", what=what, task_id=task_id)
            try:
                await self._reply(interaction, wording.internal_error(correlation_id))
            except discord.DiscordException:
                log.warning("discord.reply_failed")

    async def _defer(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)

    async def _record(self, interaction: discord.Interaction, result: ActionResult) -> None:
        """Answer the person and edit the clicked proposal message at once.

        The edit shows the proposal as it is when the edit is made, not ``result.proposal``: by
        the time the answer is through, the step may have run and the notifier may have shown a
        later state. The thread note (who did what) comes from the notifier, which updates every
        surface on each state change; writing it here too would record each action twice.
        """
        await self._reply(interaction, wording.neutralize_mentions(result.message))
        message = interaction.message
        client_user = interaction.client.user
        if (message is not None and result.proposal is not None and client_user is not None
                and message.author.id == client_user.id and message.embeds):
            task_id = result.proposal.task_id
            await self._surface.refresh_proposal(ref_of(message), lambda: self._commands.show(task_id))

    # -- buttons -------------------------------------------------------------------------------

    async def on_button(self, interaction: discord.Interaction, action: str, task_id: int) -> None:
        async def work(actor: Actor) -> None:
            # A person who would be refused is told at once, not after filling in a form; the
            # check and show are bounded because a modal must be the first answer within 3 s.
            if action == "reject":
                async with asyncio.timeout(SHOW_TIMEOUT_S):
                    await self._commands.may_reject(task_id, actor)
                await self._open(interaction, discord_forms.reject_modal(task_id))
            elif action == "confirm":
                async with asyncio.timeout(SHOW_TIMEOUT_S):
                    await self._commands.may_approve(task_id, actor)
                await self._open(interaction, discord_forms.confirm_modal(task_id))
            elif action == "edit":
                async with asyncio.timeout(SHOW_TIMEOUT_S):
                    await self._commands.may_approve(task_id, actor)
                    proposal = await self._commands.show(task_id)
                if not discord_forms.edit_keys(proposal):
                    await self._reply(interaction, f"Task #{task_id} has nothing an approver may edit.")
                    return
                await self._open(interaction, discord_forms.edit_modal(proposal))
            elif action == "details":
                await self._defer(interaction)
                proposal = await self._commands.show(task_id)
                text = wording.proposal_text(proposal, budget=1900)
                await self._reply(interaction, text, embed=details_embed(proposal))
            elif action == "approve":
                await self._defer(interaction)
                await self._record(interaction, await self._commands.approve(task_id, actor))
            elif action == "undo":
                await self._defer(interaction)
                await self._record(interaction, await self._commands.undo(task_id, actor))
            elif action == "retry":
                await self._defer(interaction)
                await self._record(interaction, await self._commands.retry(task_id, actor))

        await self._guarded(interaction, action, task_id, work)

    @staticmethod
    async def _open(interaction: discord.Interaction, modal: discord.ui.Modal) -> None:
        await interaction.response.send_modal(modal)
        modal.stop()  # the submit is handled from the payload by on_modal, so nothing is kept

    # -- modal submits -------------------------------------------------------------------------

    async def on_modal(self, interaction: discord.Interaction) -> None:
        """Every ``ooda:modal:*`` submit; others (not ours) are left alone."""
        data: Mapping[str, Any] = interaction.data or {}
        match = discord_forms.MODAL_ID_PATTERN.fullmatch(str(data.get("custom_id", "")))
        if match is None:
            return
        task_id, values = int(match["task"]), discord_forms.modal_values(data)
        if match["kind"] == "reject":
            await self._on_reject(interaction, task_id, values)
        elif match["kind"] == "confirm":
            await self._on_confirm(interaction, task_id, values)
        else:
            await self._on_edit(interaction, task_id, values)

    async def _on_reject(self, interaction: discord.Interaction, task_id: int, values: dict[str, str]) -> None:
        async def work(actor: Actor) -> None:
            await self._defer(interaction)
            reason = values.get("reason", "").strip()
            await self._record(interaction, await self._commands.reject(task_id, actor, reason))

        await self._guarded(interaction, "reject", task_id, work)

    async def _on_confirm(self, interaction: discord.Interaction, task_id: int, values: dict[str, str]) -> None:
        async def work(actor: Actor) -> None:
            await self._defer(interaction)
            phrase = values.get(discord_forms.CONFIRM_INPUT, "").strip()
            await self._record(interaction, await self._commands.approve(task_id, actor, confirmation=phrase))

        await self._guarded(interaction, "confirm", task_id, work)

    async def _on_edit(self, interaction: discord.Interaction, task_id: int, values: dict[str, str]) -> None:
        async def work(actor: Actor) -> None:
            await self._defer(interaction)
            proposal = await self._commands.show(task_id)
            edits = discord_forms.parse_edits(proposal, values)
            phrase = values.get(discord_forms.CONFIRM_INPUT, "").strip() or None
            result = await self._commands.approve(task_id, actor, edits=edits or None, confirmation=phrase)
            await self._record(interaction, result)

        await self._guarded(interaction, "edit", task_id, work)

    # -- /ops ----------------------------------------------------------------------------------

    async def on_ops(self, interaction: discord.Interaction, words: list[str]) -> None:
        command = chatops.parse_ops(shlex.join(words))

        async def work(actor: Actor) -> None:
            await self._defer(interaction)
            reply = await chatops.run_ops(command, self._commands, actor)
            await self._reply(interaction, reply.text)
            if reply.ok and reply.public and interaction.channel_id is not None:
                note = wording.action_note(actor.display, f"ran `/ops {command.name}`", reply.text,
                                           discord.utils.utcnow())
                await self._surface.post_notice(str(interaction.channel_id), note)

        await self._guarded(interaction, f"ops.{command.name}", command.task_id, work)


def details_embed(proposal: Proposal) -> discord.Embed:
    """Every step with its params, dry-run preview and rollback: what Details shows privately."""
    embed = discord.Embed(title=wording.truncate(f"#{proposal.task_id} steps", 256))
    for step in proposal.steps[:25]:
        lines = [f"params: {wording.neutralize_mentions(repr(step.params))}"]
        if step.dry_run:
            lines.append(f"dry run: {wording.neutralize_mentions(step.dry_run)}")
        if step.rollback:
            lines.append(f"rollback: {wording.neutralize_mentions(step.rollback)}")
        embed.add_field(name=wording.truncate(f"{step.index + 1}. {step.name} ({step.tool})", 256),
                        value=wording.truncate("\n".join(lines), 1024), inline=False)
        if len(embed) > 5500:
            break
    return embed


def ops_group(handler: Callable[[discord.Interaction, list[str]], Awaitable[None]]) -> app_commands.Group:
    """``/ops`` with the same subcommands as Slack; each one becomes text for ``chatops.parse_ops``."""
    ops = app_commands.Group(name="ops", description="Ooda chat-ops: proposals, tasks, kill switch")

    @ops.command(name="help", description="What /ops can do")
    async def help_(interaction: discord.Interaction) -> None:
        await handler(interaction, ["help"])

    @ops.command(name="status", description="Kill switch, autonomy cap, open tasks, recent failures")
    async def status(interaction: discord.Interaction) -> None:
        await handler(interaction, ["status"])

    @ops.command(name="tasks", description="Open tasks")
    async def tasks(interaction: discord.Interaction) -> None:
        await handler(interaction, ["tasks"])

    @ops.command(name="show", description="One task's proposal")
    async def show(interaction: discord.Interaction, task: int) -> None:
        await handler(interaction, ["show", str(task)])

    @ops.command(name="approve", description="Approve a proposal")
    @app_commands.describe(confirmation="The phrase a critical-risk proposal asks for")
    async def approve(interaction: discord.Interaction, task: int, confirmation: str | None = None) -> None:
        await handler(interaction, ["approve", str(task), *([confirmation] if confirmation else [])])

    @ops.command(name="reject", description="Reject a proposal")
    async def reject(interaction: discord.Interaction, task: int, reason: str) -> None:
        await handler(interaction, ["reject", str(task), reason])

    @ops.command(name="run", description="Start a playbook by hand")
    @app_commands.describe(args='key=value pairs separated by spaces; quote a value with spaces: note="a b"')
    async def run(interaction: discord.Interaction, playbook: str, args: str | None = None) -> None:
        await handler(interaction, ["run", playbook, *chatops.split_words(args or "")])

    @ops.command(name="pause", description="Kill switch on: no write runs")
    async def pause(interaction: discord.Interaction, reason: str | None = None) -> None:
        await handler(interaction, ["pause", *([reason] if reason else [])])

    @ops.command(name="resume", description="Kill switch off")
    async def resume(interaction: discord.Interaction) -> None:
        await handler(interaction, ["resume"])

    @ops.command(name="undo", description="Run the rollback of a finished task")
    async def undo(interaction: discord.Interaction, task: int) -> None:
        await handler(interaction, ["undo", str(task)])

    @ops.command(name="retry", description="Decide a task the policy stopped again, under the policy of now")
    async def retry(interaction: discord.Interaction, task: int) -> None:
        await handler(interaction, ["retry", str(task)])

    @ops.command(name="digest", description="Post the digest of the last 24 hours, with its chart, now")
    async def digest(interaction: discord.Interaction) -> None:
        await handler(interaction, ["digest"])

    return ops
