"""Values that fill tool params: URL params encoded and normalized, labels held to the arg patterns."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from adapters.tools.http import HttpParams
from bot.playbooks.param_checks import ParamRules, normalize_url, param_rules, remove_dot_segments, url_params
from bot.playbooks.templates import TemplateRenderError, build_context, render_params

BASE = "http://127.0.0.1:8099"
PREFIX = "/platform/services/"
URL_TEMPLATE = "{{ vars.platform_api }}/platform/services/{{ labels.service }}/rollback?reason={{ labels.reason }}"
HOSTILE_PARTS = ["..", ".", "%2e%2e", "%2E", "../../../services/checkout/rollback?x=", "?", "#", "@evil.com", "\\",
                 "/", "%", "&", "=", "//evil.com", "é", "☃", "\u202e", " ", "\n", ":", ";", "+", ""]
hostile_values = st.lists(st.sampled_from(HOSTILE_PARTS) | st.text(max_size=8), max_size=5).map("".join)
URL_RULES = ParamRules(url_params=url_params(HttpParams))


def context(**labels: str) -> dict:
    return build_context([], {}, labels, {"platform_api": BASE}, None)


def rendered_url(template: str, **labels: str) -> str:
    return render_params({"url": template}, context(**labels), where="steps.roll_back.params", rules=URL_RULES)["url"]


def test_the_http_tool_declares_its_url_param() -> None:
    assert url_params(HttpParams) == frozenset({"url"})
    assert param_rules({"service": "[a-z]+", "team": None}, HttpParams) == ParamRules(
        url_params=frozenset({"url"}), arg_patterns={"service": "[a-z]+"})


@settings(max_examples=300, deadline=None)
@given(service=hostile_values, reason=hostile_values)
@example(service="..", reason="x")
@example(service="%2e%2e", reason="#frag")
@example(service="../../../services/checkout/rollback?x=", reason="a&b=c")
@example(service="@evil.com", reason="\\")
@example(service="", reason="")
def test_inserted_values_never_leave_the_templates_prefix_or_change_the_host(service: str, reason: str) -> None:
    try:
        url = rendered_url(URL_TEMPLATE, service=service, reason=reason)
    except TemplateRenderError as exc:
        # The one refusal: a value that would be a whole empty, "." or ".." segment.
        assert service in {"", ".", ".."}
        assert "URL path segment" in str(exc)
        return

    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.fragment) == ("http", "127.0.0.1:8099", "")
    assert parts.path.startswith(PREFIX) and parts.path.endswith("/rollback")
    segment = parts.path.removeprefix(PREFIX).removesuffix("/rollback")
    assert "/" not in segment and unquote(segment) == service  # one segment, holding exactly the value
    key, _, value = parts.query.partition("=")
    assert key == "reason" and "&" not in value and unquote(value) == reason
    assert normalize_url(url) == url  # already final: what the approver sees is what is sent
    assert HttpParams(url=url).url == url


def test_the_reported_attack_stays_one_encoded_segment() -> None:
    template = "{{ vars.platform_api }}/platform/workloads/{{ labels.namespace }}/{{ labels.workload }}/restart"
    url = rendered_url(template, namespace="shop", workload="../../../services/checkout/rollback?x=")

    assert url == (f"{BASE}/platform/workloads/shop/..%2F..%2F..%2Fservices%2Fcheckout%2Frollback%3Fx%3D/restart")


@pytest.mark.parametrize("value", ["..", ".", ""])
def test_a_value_that_would_be_a_dot_or_empty_segment_is_refused_with_words(value: str) -> None:
    with pytest.raises(TemplateRenderError) as caught:
        rendered_url("{{ vars.platform_api }}/platform/services/{{ labels.service }}/rollback", service=value)

    assert str(caught.value) == (
        f"step roll_back, param url: value {value!r} would make the URL path segment {value!r}; an empty, '.' or "
        "'..' segment changes which resource the URL names")


def test_two_values_that_together_make_dot_dot_are_refused_and_dots_inside_a_name_are_kept() -> None:
    with pytest.raises(TemplateRenderError, match=r"URL path segment '\.\.'"):
        rendered_url("{{ vars.platform_api }}/a/{{ labels.x }}{{ labels.y }}/b", x=".", y=".")

    assert rendered_url("{{ vars.platform_api }}/a/{{ labels.x }}/b", x="redis.cache") == f"{BASE}/a/redis.cache/b"


def test_a_value_in_the_host_must_be_a_host_name() -> None:
    assert rendered_url("http://{{ labels.host }}:9100/metrics", host="db-01") == "http://db-01:9100/metrics"
    for hostile in ("evil.com/", "a@evil.com", "evil.com#", "evil.com\\x", "evil.com?"):
        with pytest.raises(TemplateRenderError, match="inserted into the URL's host"):
            rendered_url("http://{{ labels.host }}:9100/metrics", host=hostile)


def test_the_base_url_from_config_is_kept_as_is_with_its_own_path() -> None:
    ctx = build_context([], {}, {"service": "a/b"}, {"platform_api": "https://API.example.com/v1/"}, None)

    params = render_params({"url": "{{ vars.platform_api }}services/{{ labels.service }}"}, ctx, rules=URL_RULES)

    assert params["url"] == "https://api.example.com/v1/services/a%2Fb"


def test_a_url_param_is_normalized_even_without_a_template_and_other_params_are_left_alone() -> None:
    params = render_params({"url": "HTTP://Example.COM/a/./b/../c#top", "note": "/a/../b {{ labels.service }}"},
                           context(service=".."), rules=URL_RULES)

    assert params == {"url": "http://example.com/a/c", "note": "/a/../b .."}


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("http://h/a/../../b", "http://h/b"),
        ("http://h/a/%2e%2E/b", "http://h/b"),
        ("http://h\\@evil.com/x", "http://h/@evil.com/x"),  # read as a browser reads it: host h
        ("http://h/a b/é?q=1 2#frag", "http://h/a%20b/%C3%A9?q=1%202"),
        ("http://h", "http://h/"),
        ("http://h:8080/x?a=%2F", "http://h:8080/x?a=%2F"),
    ],
)
def test_normalize_url(url: str, normal: str) -> None:
    assert normalize_url(url) == normal
    assert normalize_url(normal) == normal


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://user:pw@h/", "must not carry credentials"),
        ("http://h.example@evil.com/", "must not carry credentials"),
        ("ftp://h/", "absolute http:// or https://"),
        ("/relative", "absolute http:// or https://"),
        ("http://bücher.example/", "xn-- form"),
    ],
)
def test_normalize_url_refuses_what_it_cannot_make_safe(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        normalize_url(url)


def test_remove_dot_segments_never_climbs_above_the_root() -> None:
    assert remove_dot_segments("/a/b/../../../../c") == "/c"
    assert remove_dot_segments("/a/b/..") == "/a/"
    assert remove_dot_segments("/a/./b/.") == "/a/b/"
