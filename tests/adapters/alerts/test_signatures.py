import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from adapters.alerts.signatures import header_value, matches_any, versioned_entries
from bot.errors import Unauthorized


def test_header_lookup_ignores_case_in_plain_dicts():
    assert header_value({"x-ooda-signature": "v1=ab"}, "X-Ooda-Signature") == "v1=ab"
    assert header_value({"X-OODA-SIGNATURE": "v1=ab"}, "x-ooda-signature") == "v1=ab"
    assert header_value({"X-Other": "1"}, "X-Ooda-Signature") is None


def test_header_lookup_works_on_aiohttp_headers():
    headers = CIMultiDictProxy(CIMultiDict({"X-PagerDuty-Signature": "v1=ab"}))

    assert header_value(headers, "x-pagerduty-signature") == "v1=ab"


def test_entries_keep_only_the_requested_version():
    assert versioned_entries("v1=aa, v0=bb ,v1=cc,", "X-Sig") == ["aa", "cc"]


def test_any_candidate_may_match_and_case_is_ignored():
    assert matches_any("ab12", ["ff00", "AB12"])
    assert not matches_any("ab12", ["ab1", "ab123", ""])


def test_a_header_stuffed_with_entries_is_refused():
    with pytest.raises(Unauthorized, match="9 entries"):
        versioned_entries(",".join(["v1=00"] * 9), "X-Sig")
