import pytest
from pydantic import ValidationError

from adapters.tools.notify import NotifyParams, NotifyTool
from bot.errors import ToolError
from bot.model.proposals import Category


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str | None, str]] = []

    async def send(self, channel: str | None, text: str) -> None:
        self.sent.append((channel, text))


async def test_sends_the_text_to_the_channel():
    outbox = Outbox()
    tool = NotifyTool(outbox.send)

    result = await tool.run(NotifyParams(text="checkout rolled back", channel="#ops"), dry_run=False)

    assert outbox.sent == [("#ops", "checkout rolled back")]
    assert result.sent is True
    assert tool.category_of(NotifyParams(text="x")) is Category.write_reversible
    assert tool.rollback_for(NotifyParams(text="x"), result) is None


async def test_dry_run_sends_nothing():
    outbox = Outbox()
    result = await NotifyTool(outbox.send).run(NotifyParams(text="hello"), dry_run=True)
    assert outbox.sent == [] and result.dry_run is True and result.sent is False


async def test_pii_from_alert_labels_is_masked_before_posting():
    outbox = Outbox()
    await NotifyTool(outbox.send).run(NotifyParams(text="user jo@example.com locked out"), dry_run=False)
    assert outbox.sent[0][1] == "user [redacted:email] locked out"


async def test_a_failing_send_becomes_a_tool_error_without_its_text():
    async def broken(channel: str | None, text: str) -> None:
        raise RuntimeError("token xoxb-123456789-secret rejected")

    with pytest.raises(ToolError) as caught:
        await NotifyTool(broken).run(NotifyParams(text="hi", channel="#ops"), dry_run=False)
    assert "xoxb" not in str(caught.value) and "#ops" in str(caught.value)


def test_text_length_is_bounded():
    with pytest.raises(ValidationError):
        NotifyParams(text="x" * 3001)
    with pytest.raises(ValidationError):
        NotifyParams(text="")
