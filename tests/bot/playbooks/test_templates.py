from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from bot.errors import UserError
from bot.model.signals import Severity, Signal, SignalStatus
from bot.playbooks.param_checks import ParamRules
from bot.playbooks.templates import (
    MAX_CONTEXT_STRING_CHARS,
    MAX_TEMPLATE_CHARS,
    TemplateRenderError,
    build_context,
    evaluate,
    references,
    render_params,
    render_template,
    syntax_problem,
)


def signal(**labels: str) -> Signal:
    return Signal(
        source="alertmanager",
        fingerprint="f" + "".join(labels.values())[:10],
        status=SignalStatus.firing,
        severity=Severity.critical,
        title="NginxHighHttp5xxErrorRate checkout",
        labels={"alertname": "NginxHighHttp5xxErrorRate", **labels},
        annotations={"summary": "5xx above 5%"},
        starts_at=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        url="http://prom:9090/graph",
    )


def context(**labels: str) -> dict:
    return build_context([signal(**labels)], {}, {}, {"platform_api": "http://127.0.0.1:8099"}, None)


HOSTILE = ["{{ 7*7 }}", "'; rm -rf /", "$(reboot)", "{% for x in range(10) %}x{% endfor %}", "42", "[1, 2]", "None"]


@pytest.mark.parametrize("value", HOSTILE)
def test_label_values_render_as_inert_strings(value: str) -> None:
    ctx = context(service=value)

    assert render_template("{{ labels.service }}", ctx) == value
    assert render_template("svc={{ labels.service }}", ctx) == f"svc={value}"
    assert render_params({"argv": ["echo", "{{ labels.service }}"]}, ctx) == {"argv": ["echo", value]}


def test_rendered_output_is_never_rendered_again() -> None:
    ctx = context(service="{{ vars.platform_api }}")

    assert render_template("{{ vars.platform_api }}/{{ labels.service }}", ctx) == (
        "http://127.0.0.1:8099/{{ vars.platform_api }}"
    )


def test_huge_label_is_truncated_with_a_marker_and_logged() -> None:
    with capture_logs() as logs:
        ctx = context(service="x" * 100_000)

    value = render_template("{{ labels.service }}", ctx)
    assert value.startswith("x" * MAX_CONTEXT_STRING_CHARS)
    assert value.endswith(f"…[truncated {100_000 - MAX_CONTEXT_STRING_CHARS} characters]")
    assert next(e for e in logs if e["event"] == "template.context_truncated")["fields"] == [
        "labels.service",
        "signal.labels.service",
        "signals.0.labels.service",
    ]


def test_whole_expression_keeps_native_type_and_mixed_text_is_a_string() -> None:
    ctx = build_context([signal(service="a"), signal(service="b")], {}, {}, {}, None)

    assert render_template("{{ count }}", ctx) == 2
    assert render_template("{{ count * 25 }}", ctx) == 50
    assert render_template("{{ count > 1 }}", ctx) is True
    assert render_template("{{ [count, 3] }}", ctx) == [2, 3]
    assert render_template("n={{ count }}", ctx) == "n=2"
    assert render_params({"rollout": "{{ count * 10 }}", "enabled": True, "note": "plain"}, ctx) == {
        "rollout": 20,
        "enabled": True,
        "note": "plain",
    }


@pytest.mark.parametrize(
    "source",
    [
        "{{ labels.__class__ }}",
        "{{ labels.__class__.__mro__ }}",
        "x{{ labels.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ '{0.__class__}'.format(labels) }}",
        "{{ labels.update({'a': 1}) }}",
        "{{ 'a' * 10000000 }}",
        "{{ range(1000000) | list }}",
        "{{ 2 ** 100000 }}",
        "{% for i in range(10000) %}{{ 'y' * 1000 }}{% endfor %}",
    ],
)
def test_unsafe_or_runaway_templates_raise_the_render_error(source: str) -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render_template(source, context(service="checkout"), where="step 'x' params.url")

    assert isinstance(caught.value, UserError)
    assert str(caught.value).startswith("step 'x' params.url: ")
    assert len(str(caught.value)) < 400


def test_strict_undefined_names_the_param_path() -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render_params({"json": {"items": ["ok", "{{ labels.team }}"]}}, context(), where="step 'throttle' params")

    assert caught.value.where == "step 'throttle' params.json.items.1"
    assert "team" in caught.value.problem


def test_missing_name_alone_is_an_error_not_an_undefined_object() -> None:
    with pytest.raises(TemplateRenderError, match="'missing' is undefined"):
        render_template("{{ missing }}", context())
    with pytest.raises(TemplateRenderError, match="undefined"):
        render_template("{{ [1, missing] }}", context())


def test_error_message_does_not_echo_huge_values() -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render_template("{{ labels.service + 1 }}", context(service="s" * 50_000))

    assert len(str(caught.value)) < 400


def test_evaluate_returns_bools_and_insists_on_them() -> None:
    ctx = build_context([], {"health": {"status": 200, "body": '{"error_rate": 0.12}'}}, {}, {}, None)

    assert evaluate("evidence.health.status == 200", ctx) is True
    assert evaluate("(evidence.health.body | from_json).error_rate < 0.01", ctx) is False
    with pytest.raises(TemplateRenderError, match="expected true or false, got a int"):
        evaluate("evidence.health.status", ctx)
    with pytest.raises(TemplateRenderError, match=r"there is no evidence .deploys. \(evidence collected: health\)"):
        evaluate("evidence.deploys.status == 200", ctx, where="condition")


def test_manual_run_uses_args_as_labels() -> None:
    ctx = build_context([], {}, {"service": "checkout"}, {}, {"id": 7, "environment": "prod"})

    assert render_template("{{ labels.service }}/{{ args.service }}/{{ task.id }}", ctx) == "checkout/checkout/7"
    assert ctx["count"] == 0
    assert ctx["signal"]["source"] == "manual"


def test_context_caps_signals_but_counts_all() -> None:
    many = [signal(service=f"s{i}") for i in range(30)]

    ctx = build_context(many, {}, {}, {}, None)

    assert ctx["count"] == 30
    assert len(ctx["signals"]) == 20
    assert ctx["labels"]["service"] == "s0"
    assert ctx["signal"]["severity"] == "critical"
    assert ctx["signal"]["annotations"] == {"summary": "5xx above 5%"}


def test_syntax_problems_and_source_cap() -> None:
    assert syntax_problem("{{ labels.service }}") is None
    assert "syntax error" in syntax_problem("{{ labels.service }")
    assert "syntax error" in syntax_problem("a ==", expression=True)
    assert "limit" in syntax_problem("x" * (MAX_TEMPLATE_CHARS + 1))
    with pytest.raises(TemplateRenderError, match="limit"):
        render_template("{{ 1 }}" + " " * MAX_TEMPLATE_CHARS, {})


def test_references_list_names_and_attributes() -> None:
    refs = references("{{ evidence.health.body }}/{{ labels['service'] }}{% for s in signals %}{{ s }}{% endfor %}")

    assert refs == {"evidence": {"health"}, "labels": {"service"}, "signals": set()}


def test_a_missing_label_is_named_in_words_with_the_labels_the_alert_has() -> None:
    ctx = context(namespace="shop", pod="checkout-6f9c7b8d5-x7k2p")
    with pytest.raises(TemplateRenderError) as caught:
        render_params({"url": "/apis/apps/v1/namespaces/{{ labels.namespace }}/deployments/{{ labels.deployment }}"},
                      ctx, where="steps.restart.params")

    assert str(caught.value) == ("step restart, param url: the alert has no label 'deployment' "
                                 "(its labels: alertname, namespace, pod)")


def test_missing_evidence_in_a_condition_is_named_in_words() -> None:
    ctx = build_context([], {"health": {"status": 200}}, {}, {}, None)
    with pytest.raises(TemplateRenderError) as caught:
        evaluate("evidence.history.previous_revision > 0", ctx, where="condition")

    assert str(caught.value) == "condition: there is no evidence 'history' (evidence collected: health)"


def test_promql_filter_keeps_a_hostile_label_inside_its_string() -> None:
    ctx = context(instance='db-01"} or vector(1) or up{x="\\')
    query = render_template('up{instance="{{ labels.instance | promql }}"}', ctx)

    assert query == 'up{instance="db-01\\"} or vector(1) or up{x=\\"\\\\"}'


def test_signal_expression_is_the_alerts_own_promql_from_its_generator_url() -> None:
    alert = Signal(source="alertmanager", fingerprint="f", status="firing", labels={"alertname": "KubePodCrashLooping"},
                   url="http://prometheus:9090/graph?g0.expr=max_over_time%28kube_pod_container_status_waiting_reason"
                       "%7Breason%3D%22CrashLoopBackOff%22%7D%5B5m%5D%29+%3E%3D+1&g0.tab=1")
    ctx = build_context([alert], {}, {}, {}, None)

    assert render_template("{{ signal.expression }}", ctx) == (
        'max_over_time(kube_pod_container_status_waiting_reason{reason="CrashLoopBackOff"}[5m]) >= 1')
    assert build_context([], {}, {}, {}, None)["signal"]["expression"] == ""


def test_annotations_are_template_context() -> None:
    alert = Signal(source="alertmanager", fingerprint="f", status="firing", labels={"alertname": "KubePodCrashLooping"},
                   annotations={"summary": "Pod is crash looping.", "version": "2.42.0"})
    ctx = build_context([alert], {}, {}, {}, None)

    assert render_template("{{ annotations.summary }} ({{ annotations.version }})", ctx) == (
        "Pod is crash looping. (2.42.0)")


WORKLOAD = "[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
ARG_RULES = ParamRules(arg_patterns={"workload": WORKLOAD, "service": "[a-z0-9-]+"})


def test_a_label_that_fills_a_param_must_match_the_playbooks_arg_pattern() -> None:
    ctx = context(workload="../x")

    with pytest.raises(TemplateRenderError) as caught:
        render_params({"namespace": "shop", "name": "{{ labels.workload }}"}, ctx, where="steps.restart.params",
                      rules=ARG_RULES)

    assert str(caught.value) == (
        f"step restart, param name: label 'workload' value '../x' does not match the playbook's pattern {WORKLOAD}")
    assert isinstance(caught.value, UserError)


def test_the_pattern_holds_for_labels_read_by_key_inside_text_and_for_args() -> None:
    ctx = build_context([], {}, {"workload": "a b"}, {}, None)

    for source in ("deploy/{{ labels['workload'] }}", "{{ args.workload }}", "{{ labels.workload | lower }}"):
        with pytest.raises(TemplateRenderError, match="value 'a b' does not match the playbook's pattern"):
            render_params({"name": source}, ctx, rules=ARG_RULES)
    with pytest.raises(TemplateRenderError, match="argument 'workload' value 'a b'"):
        render_params({"name": "{{ args.workload }}"}, ctx, rules=ARG_RULES)


def test_the_value_checked_is_the_one_that_fills_the_param() -> None:
    # Traefik names a service `name@provider`; the playbook keeps the part before the @.
    ctx = context(service="shop-checkout-80@kubernetes")
    split = "{{ labels.service.split('@')[0] }}"

    assert render_params({"flag": f"throttle-{split}"}, ctx, rules=ARG_RULES) == {"flag": "throttle-shop-checkout-80"}
    with pytest.raises(TemplateRenderError) as caught:
        render_params({"name": "{{ labels.service }}"}, context(service="a/b@kubernetes"), rules=ARG_RULES)
    assert "label 'service' value 'a/b@kubernetes' does not match" in str(caught.value)
    with pytest.raises(TemplateRenderError) as caught:
        render_params({"name": split}, context(service="a/b@kubernetes"), rules=ARG_RULES)
    assert "label 'service' value 'a/b@kubernetes' gives 'a/b', which does not match" in str(caught.value)


def test_values_without_a_declared_pattern_and_computed_numbers_are_not_held_to_one() -> None:
    ctx = context(workload="../x", team="../y")

    assert render_params({"team": "{{ labels.team }}", "n": "{{ 3 if labels.workload == '../x' else 1 }}"}, ctx,
                         rules=ARG_RULES) == {"team": "../y", "n": 3}
    assert render_params({"name": "{{ labels.workload }}"}, ctx) == {"name": "../x"}  # no rules: no check


def test_a_pattern_mismatch_does_not_echo_a_huge_value() -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render_params({"name": "{{ labels.workload }}"}, context(workload="X" * 10_000), rules=ARG_RULES)

    assert len(str(caught.value)) < 300
