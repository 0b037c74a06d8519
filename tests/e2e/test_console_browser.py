"""The web console in a real browser (headless chromium through Selenium) against a real Ooda.

Set ``OODA_SCREENSHOTS=docs`` to save the README's pictures of the inbox and a task timeline.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import LiveOoda, attribute_of, chrome, screenshot, sign_in, text_of, visible, wait
from tests.harness import AM, ENV

IDENTITIES = {
    "identities": [
        {"id": "local-admin", "display": "Local admin", "roles": ["admin", "operator", "oncall", "sre", "sre-lead"],
         "api_token_env": "OODA_API_TOKEN"},
        {"id": "viewer", "display": "Viewer", "roles": [], "api_token_env": "OODA_VIEWER_TOKEN"},
    ]
}
HOSTILE = "<script>alert(1)</script>"


def crashloop_alert(**extra_labels: str) -> bytes:
    body = json.loads((resources.files("bot") / "samples" / "alertmanager-kube-pod-crashlooping.json").read_text())
    for alert in body["alerts"]:
        alert["labels"].update(extra_labels)
        if extra_labels:
            alert["annotations"]["summary"] = f"summary with {HOSTILE}"
    return json.dumps(body).encode()


def fire(ooda: LiveOoda, body: bytes) -> None:
    response = httpx.post(f"{ooda.base_url}/webhooks/alertmanager", content=body, headers=AM, timeout=30)
    assert response.status_code == 202, response.text


def viewer_token(tmp_path: Path) -> str:
    return (tmp_path / "data" / "secrets" / "OODA_VIEWER_TOKEN").read_text().strip()


def open_task(driver: WebDriver) -> int:
    """Waits on the inbox (it refreshes itself) for the task's row, and follows its link."""
    href = attribute_of(driver, "#waiting tr.task-row a.title", "href")
    driver.get(href)
    visible(driver, "#timeline")
    return int(href.rsplit("/", 1)[1])


@pytest.fixture
def ooda(tmp_path: Path) -> Any:
    with LiveOoda(tmp_path, IDENTITIES) as live:
        yield live


def test_sign_in_see_the_proposal_arrive_approve_it_and_read_the_output_and_the_audit(ooda: LiveOoda) -> None:
    with chrome() as driver:
        sign_in(driver, ooda.base_url, ENV["OODA_API_TOKEN"])
        assert driver.current_url.endswith("/ui/inbox")
        visible(driver, "#nothing-waiting")
        wait(driver, lambda d: d.find_element(By.ID, "live-status").text.startswith("Live"))

        fire(ooda, crashloop_alert())
        # No reload: the inbox refreshes itself and the proposal appears.
        assert "kube-pod-crashlooping" in text_of(driver, "#waiting tr.task-row")
        screenshot(driver, "console-inbox")
        task_id = open_task(driver)

        assert text_of(driver, "#task-state") == "needs_approval"
        driver.find_element(By.ID, "approve").click()
        assert "Approved by Local admin" in text_of(driver, ".flash")
        # The step's exact action and its output, once the page has followed the run to its end.
        wait(driver, lambda d: d.find_element(By.ID, "task-state").text == "completed")
        step = "#stage-steps li.step[data-step='restart']"
        assert "k8s.rollout_restart" in text_of(driver, f"{step} .action")
        assert text_of(driver, f"{step} .output").startswith("Output")
        assert text_of(driver, f"{step} .state") == "succeeded"
        assert "approved by Local admin" in text_of(driver, "#stage-decisions")
        assert "verified with k8s.workload_status" in text_of(driver, "#stage-verify")
        screenshot(driver, "console-task")

        driver.get(f"{ooda.base_url}/ui/audit?task={task_id}")
        records = visible(driver, "#audit-records")
        approval = records.find_element(By.CSS_SELECTOR, "tr[data-action='task.approval']")
        assert "local-admin" in approval.text
        assert records.find_elements(By.CSS_SELECTOR, "tr[data-action='tool.call']")
        driver.find_element(By.ID, "verify").click()
        assert "intact" in visible(driver, "#verify-status").text


def test_a_viewer_reads_the_task_but_is_offered_no_button(ooda: LiveOoda, tmp_path: Path) -> None:
    fire(ooda, crashloop_alert())
    with chrome() as driver:
        sign_in(driver, ooda.base_url, viewer_token(tmp_path))
        assert "viewer (no role)" in driver.find_element(By.CSS_SELECTOR, ".roles").text
        open_task(driver)
        assert text_of(driver, "#task-state") == "needs_approval"
        assert driver.find_elements(By.CSS_SELECTOR, "#approve, #reject, #undo, #actions") == []
        driver.get(f"{ooda.base_url}/ui/policy")
        visible(driver, "#kill-switch-state")
        assert driver.find_elements(By.CSS_SELECTOR, "#pause, #resume") == []


def test_a_hostile_label_shows_as_text_and_runs_nothing(ooda: LiveOoda) -> None:
    fire(ooda, crashloop_alert(note=HOSTILE))
    with chrome() as driver:
        sign_in(driver, ooda.base_url, ENV["OODA_API_TOKEN"])
        open_task(driver)
        signals = text_of(driver, "#stage-signals")
        assert f"note={HOSTILE}" in signals
        assert f"summary with {HOSTILE}" in signals
        assert driver.find_elements(By.XPATH, "//script[contains(., 'alert(1)')]") == []
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.accept()


def test_pages_read_without_javascript(ooda: LiveOoda) -> None:
    fire(ooda, crashloop_alert())
    with chrome(javascript=False) as driver:
        sign_in(driver, ooda.base_url, ENV["OODA_API_TOKEN"])  # a plain form post
        # Without the script nothing refreshes the inbox: reload until the engine has proposed.
        wait(driver, lambda d: d.refresh() or d.find_elements(By.CSS_SELECTOR, "#waiting tr.task-row"))
        assert driver.find_element(By.ID, "live-status").text == ""  # the script did not run
        open_task(driver)
        for stage in ("signals", "evidence", "proposal", "decisions", "steps", "verify", "undo"):
            assert driver.find_element(By.ID, f"stage-{stage}").is_displayed()
        assert "k8s.rollout_restart" in text_of(driver, "#stage-proposal")
        for page in ("audit", "playbooks", "policy", "digest"):
            driver.get(f"{ooda.base_url}/ui/{page}")
            visible(driver, "h1")
            # The digest's heading is the digest's own title ("Ooda digest: the 24 hours to now …").
            assert driver.find_element(By.TAG_NAME, "h1").text.lower().split(":")[0] in (page, f"ooda {page}")
