import asyncio
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import BaseModel

from adapters.alerts.alertmanager import AlertmanagerSource
from adapters.standin import Standin
from adapters.tools.flags import FlagGetParams, FlagSetParams
from adapters.tools.http import HttpParams
from adapters.tools.notify import NotifyParams
from adapters.tools.shell import ShellParams
from bot.autonomy import Autonomy
from bot.errors import ConfigError, UserError
from bot.playbooks import BlastRadius, Playbook, PlaybookSet, load_playbook_files, load_playbooks
from bot.proposals import Category
from bot.signals import Signal
from bot.templates import build_context, evaluate, render_params

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "playbooks"
BROKEN = ROOT / "tests" / "playbooks" / "broken"
TOOLS: dict[str, type[BaseModel]] = {
    "http.request": HttpParams,
    "shell.run": ShellParams,
    "flags.get": FlagGetParams,
    "flags.set": FlagSetParams,
    "chat.notify": NotifyParams,
}
# The sample alerts in bot/samples/ that the shipped playbooks are written for.
SAMPLES = {
    "disk-pressure": "alertmanager-disk-pressure.json",
    "http-5xx-spike": "alertmanager-5xx-spike.json",
    "crash-loop": "alertmanager-crashloop.json",
    "login-failures": "alertmanager-login-failures.json",
    "consumer-lag": "alertmanager-consumer-lag.json",
}


def sample_signals(playbook_id: str) -> list[Signal]:
    body = (ROOT / "bot" / "samples" / SAMPLES[playbook_id]).read_bytes()
    return AlertmanagerSource().parse(body, {})


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


# --- the shipped playbooks ------------------------------------------------------------------


def test_shipped_playbooks_load_against_the_real_tool_params() -> None:
    playbooks = load_playbooks(SHIPPED, TOOLS)

    assert playbooks.ids == sorted(SAMPLES)
    spike = playbooks.get("http-5xx-spike")
    assert [s.name for s in spike.steps] == ["throttle", "roll_back_deploy"]
    assert spike.steps[0].category is Category.write_reversible
    assert spike.steps[0].editable["rollout"].max == 100
    assert spike.steps[1].blast_radius is BlastRadius.service
    assert playbooks.get("disk-pressure").autonomy_cap is Autonomy.L3
    assert playbooks.get("crash-loop").steps[0].category is Category.write_irreversible
    assert spike.source.endswith("http-5xx-spike.yaml")


@pytest.mark.parametrize("playbook_id", sorted(SAMPLES))
def test_each_sample_alert_triggers_exactly_its_playbook(playbook_id: str) -> None:
    playbooks = load_playbooks(SHIPPED)

    (alert,) = sample_signals(playbook_id)
    assert [p.id for p in playbooks.match(alert)] == [playbook_id]


def test_group_keys_of_the_samples() -> None:
    playbooks = load_playbooks(SHIPPED)

    (alert,) = sample_signals("disk-pressure")
    assert playbooks.get("disk-pressure").group_key(alert.labels) == (
        'disk-pressure{instance="scratch-01",mountpoint="/var/scratch"}'
    )
    assert playbooks.get("consumer-lag").group_key({"consumer_group": "warehouse-loader"}) == (
        'consumer-lag{consumer_group="warehouse-loader"}'
    )


@pytest.fixture
async def standin():
    server = Standin()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def call(session: aiohttp.ClientSession, params: dict[str, Any]) -> dict[str, Any]:
    """What the http.request tool returns, reduced to the fields the playbooks read."""
    request = HttpParams.model_validate(params)
    async with session.request(request.method, request.url, json=request.body) as response:
        body = await response.text()
        assert not request.expect_status or response.status in request.expect_status, body
        return {"status": response.status, "body": body}


HTTP_PLAYBOOKS = ["http-5xx-spike", "crash-loop", "login-failures", "consumer-lag"]


@pytest.mark.parametrize("playbook_id", HTTP_PLAYBOOKS)
async def test_shipped_http_playbook_runs_end_to_end_against_the_standin(standin: Standin, playbook_id: str) -> None:
    """Render and run each step the way the engine does, against the local stand-in."""
    playbook = load_playbooks(SHIPPED, TOOLS).get(playbook_id)
    variables = {"platform_api": standin.base_url, "scratch_dir": "/unused"}
    signals = sample_signals(playbook_id)
    task = {"id": 41, "environment": "prod"}

    async with aiohttp.ClientSession() as session:
        ctx = build_context(signals, {}, {}, variables, task)
        evidence = {}
        for step in playbook.evidence:
            evidence[step.name] = await call(session, render_params(step.params, ctx))
        ctx = build_context(signals, evidence, {}, variables, task)
        assert playbook.condition is None or evaluate(playbook.condition, ctx) is True

        for step in playbook.steps:
            params = render_params(step.params, ctx, where=f"step {step.name!r} params")
            TOOLS[step.tool].model_validate(params)
            if step.tool == "http.request":
                await call(session, params)

        assert playbook.verify is not None or playbook_id == "login-failures"
        if playbook.verify is not None:
            result = await call(session, render_params(playbook.verify.params, ctx))
            assert evaluate(playbook.verify.expect, {**ctx, "result": result}, where="verify") is True

    writes = [c for c in standin.calls if c.get("method") == "POST"]
    assert len(writes) == sum(1 for s in playbook.steps if s.params.get("method") == "POST")


async def test_consumer_lag_manual_run_backfills_from_the_committed_offset(standin: Standin) -> None:
    playbook = load_playbooks(SHIPPED, TOOLS).get("consumer-lag")
    variables = {"platform_api": standin.base_url}
    args = playbook.resolve_args({"consumer_group": "warehouse-loader"})  # a manual run: no signals
    task = {"id": 1, "environment": "prod"}
    async with aiohttp.ClientSession() as session:
        ctx = build_context([], {}, args, variables, task)
        lag = await call(session, render_params(playbook.evidence[0].params, ctx))

    params = render_params(playbook.step("backfill").params, build_context([], {"lag": lag}, args, variables, task))

    assert params["url"] == f"{standin.base_url}/data/consumers/warehouse-loader/backfill"
    offset = params["json"]["from_offset"]
    assert isinstance(offset, int) and offset == standin.consumers["warehouse-loader"]["committed_offset"]


async def run_argv(argv: list[str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


async def test_disk_pressure_deletes_only_stale_tmp_files(tmp_path: Path) -> None:
    playbook = load_playbooks(SHIPPED, TOOLS).get("disk-pressure")
    scratch = tmp_path / "scratch dir; rm -rf ~"  # argv lists keep even this a single argument
    scratch.mkdir()
    stale, fresh, other = scratch / "old.tmp", scratch / "new.tmp", scratch / "keep.log"
    for path in (stale, fresh, other):
        path.write_text("x")
    hour_ago = time.time() - 7200
    os.utime(stale, (hour_ago, hour_ago))
    os.utime(other, (hour_ago, hour_ago))
    ctx = build_context(sample_signals("disk-pressure"), {}, {}, {"scratch_dir": str(scratch)}, None)

    for step in playbook.evidence:
        code, out = await run_argv(ShellParams.model_validate(render_params(step.params, ctx)).argv)
        assert code == 0 and out
    (step,) = playbook.steps
    code, _ = await run_argv(ShellParams.model_validate(render_params(step.params, ctx)).argv)

    assert code == 0
    assert sorted(p.name for p in scratch.iterdir()) == ["keep.log", "new.tmp"]


# --- validation errors ----------------------------------------------------------------------


def test_broken_playbooks_report_every_problem_with_file_line_and_field() -> None:
    with pytest.raises(ConfigError) as caught:
        load_playbooks(BROKEN, TOOLS)

    problems = caught.value.problems
    text = "\n".join(problems)

    def has(file: str, line: int, field: str, fragment: str) -> bool:
        prefix = f"{BROKEN / file}:{line}: {field}: "
        return any(p.startswith(prefix) and fragment in p for p in problems)

    assert has("unknown-key.yaml", 8, "steps.0.timeout", "unknown key"), text
    assert has("wrong-type.yaml", 4, "trigger.group_window_s", "valid number"), text
    assert has("bad-regex.yaml", 4, "trigger.match_re.service", "invalid regular expression"), text
    assert has("bad-template.yaml", 8, "evidence.0.params.url", "template syntax error"), text
    assert has("bad-template.yaml", 9, "condition", "template syntax error"), text
    assert has("unknown-tool.yaml", 6, "steps.0.tool", "did you mean 'http.request'"), text
    assert has("unknown-tool.yaml", 10, "steps.1.params.percent",
               "its params: enabled, flag, remove_strategy, rollout"), text
    assert has("dup-b.yaml", 2, "id", f"duplicate playbook id 'dup', also defined at {BROKEN / 'dup-a.yaml'}:1"), text
    assert has("bad-names.yaml", 7, "evidence.0.params.url", "did you mean 'labels'"), text
    assert has("bad-names.yaml", 11, "steps.0.params.url", "no evidence step named 'helth'"), text
    assert has("bad-names.yaml", 11, "steps.0.params.url", "labels.team is not a declared arg"), text
    assert has("bad-names.yaml", 12, "steps.0.editable.rollout", "editable keys must name params"), text
    assert caught.value.args[0].startswith(f"{len(problems)} problems in playbooks")


def test_without_a_tool_registry_only_tool_checks_are_skipped() -> None:
    with pytest.raises(ConfigError) as caught:
        load_playbooks(BROKEN)

    text = "\n".join(caught.value.problems)
    assert "unknown tool" not in text and "has no param" not in text
    assert "invalid regular expression" in text


def test_yaml_syntax_errors_are_collected_with_the_other_files(tmp_path: Path) -> None:
    bad = write(tmp_path, "a.yaml", "id: a\ntrigger: [\n")
    worse = write(tmp_path, "b.yaml", "id: B!\n")
    listy = write(tmp_path, "c.yaml", "- id: c\n")

    with pytest.raises(ConfigError) as caught:
        load_playbook_files([bad, worse, listy])

    problems = caught.value.problems
    assert problems[0].startswith(f"{bad}:") and "invalid YAML" in problems[0]
    assert problems[1].startswith(f"{worse}:1: id: ")
    assert problems[2].startswith(f"{listy}:1: (top level): a playbook must be a mapping")


def test_more_static_checks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """\
id: p
evidence:
  - name: health
    tool: http.request
    params: {url: "{{ evidence.health.body }}"}
  - name: health
    tool: http.request
condition: "evidence.health.status"
steps:
  - name: call
    tool: shell.run
    params: {argv: ["{{ args.nope }}"]}
    rollback: {tool: http.request, params: {url: "{{ result.body }}", jsonn: {}}}
verify: {tool: http.request, params: {url: "{{ result.x }}"}, expect: "result.status == 200"}
""",
    )

    with pytest.raises(ConfigError) as caught:
        load_playbook_files([path], TOOLS)

    text = "\n".join(caught.value.problems)
    assert f"{path}:5: evidence.0.params.url: evidence is not available here" in text
    assert f"{path}:6: evidence.1.params: http.request needs param 'url'" in text
    assert f"{path}:6: evidence.1.name: duplicate step name 'health'" in text
    assert f"{path}:12: steps.0.params.argv.0: args.nope is not a declared arg" in text
    assert f"{path}:13: steps.0.rollback.params.jsonn: http.request has no param 'jsonn'" in text
    assert f"{path}:14: verify.params.url: unknown name 'result'" in text
    assert "condition" not in text  # it parses; that it is not a bool only shows at run time


def test_editable_keys_may_be_dotted_paths_into_params_but_must_name_one(tmp_path: Path) -> None:
    text = """\
id: p
steps:
  - name: scale
    tool: http.request
    params: {url: "https://platform.example.com/scale", json: {replicas: 3}}
    editable:
      json.replicas: {type: int, min: 1, max: 10}
      json.replicaz: {type: int}
"""
    path = write(tmp_path, "p.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_playbook_files([path], TOOLS)
    [problem] = caught.value.problems
    assert f"{path}:8: steps.0.editable.json.replicaz: 'json.replicaz' is not a param of this step" in problem

    path.write_text(text.replace("      json.replicaz: {type: int}\n", ""))
    [playbook] = load_playbook_files([path], TOOLS)
    assert playbook.steps[0].editable["json.replicas"].max == 10


def scheduled(playbook_id: str, schedules: str) -> str:
    """A playbook taking one ``service`` arg, with the given ``schedules:`` entries (from line 5)."""
    return (f"id: {playbook_id}\nargs:\n  service: {{required: true, pattern: \"[a-z-]+\"}}\n"
            f"schedules:\n{schedules}")


def test_schedules_are_checked_at_load_with_the_line_of_each_mistake(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", scheduled("p", """\
  - cron: "*/15 * * *"
    args: {service: web}
  - cron: "0 9 * * 1-5"
    timezone: Mars/Olympus
    args: {service: web}
  - cron: "0 9 * * 8"
    args: {service: web}
"""))
    args = write(tmp_path, "q.yaml", scheduled("q", '  - cron: "0 * * * *"\n    args: {servise: web}\n'))
    with pytest.raises(ConfigError) as caught:
        load_playbook_files([path, args], TOOLS)
    text = "\n".join(caught.value.problems)
    assert f"{path}:5: schedules.0.cron: Value error, cron '*/15 * * *' has 4 fields; write five" in text, text
    assert f"{path}:8: schedules.1.timezone: Value error, unknown time zone 'Mars/Olympus'" in text, text
    assert f"{path}:10: schedules.2.cron: Value error, cron '0 9 * * 8' is not valid: '8' is not a weekday" in text
    assert f"{args}:6: schedules.0.args: cannot run playbook 'q': unknown argument(s) servise" in text, text


def test_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_playbooks(tmp_path / "nope")
    assert len(load_playbooks(tmp_path)) == 0


# --- the set and manual runs ----------------------------------------------------------------


def test_get_unknown_id_lists_known_ids_and_suggests_the_closest() -> None:
    playbooks = load_playbooks(SHIPPED)

    with pytest.raises(UserError) as caught:
        playbooks.get("consumer-lagg")

    message = str(caught.value)
    assert "Did you mean 'consumer-lag'?" in message
    assert "crash-loop, disk-pressure, http-5xx-spike, login-failures" in message
    assert "consumer-lag" in playbooks and "nope" not in playbooks
    assert sorted(p.id for p in playbooks) == playbooks.ids


def test_resolve_args_checks_required_pattern_unknown_and_defaults() -> None:
    playbook = load_playbooks(SHIPPED).get("disk-pressure")

    assert playbook.resolve_args({"instance": "scratch-01"}) == {"instance": "scratch-01", "mountpoint": "/var/scratch"}
    with pytest.raises(UserError) as caught:
        playbook.resolve_args({"mountpoint": "x; rm", "colour": "red"})
    message = str(caught.value)
    assert "unknown argument(s) colour (this playbook takes: instance, mountpoint)" in message
    assert "missing required argument instance=…" in message
    assert "does not match the pattern" in message


def test_duplicate_ids_in_code_are_refused() -> None:
    one = Playbook.model_validate({"id": "x"})

    with pytest.raises(ConfigError, match="duplicate playbook id 'x'"):
        PlaybookSet([one, one])


def test_schema_defaults_are_the_cautious_ones() -> None:
    playbook = Playbook.model_validate(
        {"id": "p", "version": 3, "steps": [{"name": "s", "tool": "http.request"}], "autonomy_cap": "l1"}
    )

    assert playbook.version == "3"
    assert playbook.autonomy_cap is Autonomy.L1
    assert playbook.steps[0].blast_radius is BlastRadius.service
    assert playbook.steps[0].category is None  # the tool decides
    assert Playbook.model_validate({"id": "q"}).autonomy_cap is Autonomy.L2
