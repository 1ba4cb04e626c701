"""The console in a real headless Chromium against a real control plane process."""
from __future__ import annotations

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.console.conftest import shot

pytestmark = pytest.mark.e2e


def wait(driver, timeout: float = 15):
    return WebDriverWait(driver, timeout)


def test_every_page_renders_from_the_rest_api(control_plane, console_factory, browser, tmp_path):
    c = console_factory()
    browser.get(c.url + "/")
    wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#topology-graph canvas")))
    # the graph holds the registered workloads and services (cytoscape drew it: ask it)
    ids = browser.execute_script("return window.mizzenGraph.nodes().map(n => n.id())")
    assert {"w:default/productpage-v1", "w:default/reviews-v1", "w:default/reviews-v2",
            "s:reviews.default.svc.cluster.local"} <= set(ids)
    shot(browser, tmp_path, "topology")

    browser.find_element(By.ID, "nav-services").click()
    table = wait(browser).until(EC.presence_of_element_located((By.ID, "services")))
    assert "reviews.default.svc.cluster.local" in table.text
    browser.find_element(By.LINK_TEXT, "reviews").click()
    wait(browser).until(EC.presence_of_element_located((By.ID, "endpoints")))
    body = browser.find_element(By.TAG_NAME, "main").text
    assert "reviews-v1" in body and "reviews-v2" in body and "unhealthy" in body  # health of endpoints
    assert "VirtualService default/reviews" in body and "DestinationRule default/reviews" in body
    assert browser.find_element(By.ID, "versions").text == "v1, v2"
    shot(browser, tmp_path, "service-reviews")

    browser.find_element(By.ID, "nav-config").click()
    res = wait(browser).until(EC.presence_of_element_located((By.ID, "resources")))
    assert "VirtualService" in res.text and "DestinationRule" in res.text
    shot(browser, tmp_path, "config")

    for nav, element in (("proxies", "proxies"), ("traces", "traces"), ("tap", "tap-form")):
        browser.find_element(By.ID, f"nav-{nav}").click()
        wait(browser).until(EC.presence_of_element_located((By.ID, element)))
        shot(browser, tmp_path, nav)
        if nav == "proxies":
            assert "No proxy connected." in browser.find_element(By.ID, "proxies").text
        if nav == "traces":
            assert "No trace store configured" in browser.find_element(By.ID, "banner").text


def _editor(browser, c, path: str):
    browser.get(c.url + path)
    return wait(browser).until(EC.presence_of_element_located((By.ID, "editor")))


def _type(browser, editor, text: str) -> None:
    editor.clear()
    browser.execute_script("arguments[0].value = arguments[1];", editor, text)


def _submit(browser, button: str) -> None:
    """Click an editor button and wait until the page it posted to replaced this one: an element looked up
    before that could still be the previous answer's (e.g. its #issues table)."""
    form = browser.find_element(By.ID, "editor-form")
    browser.find_element(By.ID, button).click()
    wait(browser, 30).until(EC.staleness_of(form))


def test_invalid_virtual_service_shows_the_field_error_and_changes_nothing(control_plane, console_factory, browser,
                                                                           tmp_path):
    c = console_factory()
    before = control_plane.get("/api/v1/resources/VirtualService/default/reviews")
    editor = _editor(browser, c, "/config/VirtualService/default/reviews")
    text = editor.get_attribute("value")
    assert "weight: 90" in text
    # a negative weight (Istio refuses it; weights need not sum to 100: Istio takes them as relative)
    _type(browser, editor, text.replace("weight: 90", "weight: -5"))
    _submit(browser, "apply")
    issues = wait(browser).until(EC.presence_of_element_located((By.ID, "issues")))
    assert "spec.http[0].route[0].weight" in issues.text and "greater than or equal to 0" in issues.text
    assert "nothing was applied" in browser.find_element(By.TAG_NAME, "main").text
    shot(browser, tmp_path, "editor-invalid")
    after = control_plane.get("/api/v1/resources/VirtualService/default/reviews")
    assert after == before

    # an unknown field, also refused with its path
    editor = browser.find_element(By.ID, "editor")
    _type(browser, editor, text.replace("  hosts:", "  hostz: [x]\n  hosts:"))
    _submit(browser, "check")
    issues = wait(browser).until(EC.presence_of_element_located((By.ID, "issues")))
    assert "hostz" in issues.text
    assert control_plane.get("/api/v1/resources/VirtualService/default/reviews") == before


def test_analysis_blocks_a_dangling_subset_and_a_good_edit_applies(control_plane, console_factory, browser, tmp_path):
    c = console_factory()
    editor = _editor(browser, c, "/config/VirtualService/default/reviews")
    text = editor.get_attribute("value")
    rev0 = control_plane.get("/api/v1/resources/VirtualService/default/reviews")
    _type(browser, editor, text.replace("subset: v2", "subset: v9"))
    _submit(browser, "apply")
    ana = wait(browser).until(EC.presence_of_element_located((By.ID, "analysis")))
    assert "IST0101" in ana.text and "v9" in ana.text
    assert control_plane.get("/api/v1/resources/VirtualService/default/reviews") == rev0
    shot(browser, tmp_path, "editor-analysis")

    editor = browser.find_element(By.ID, "editor")
    _type(browser, editor, text.replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50"))
    _submit(browser, "apply")
    res = wait(browser).until(EC.presence_of_element_located((By.ID, "apply-result")))
    assert "Applied at revision" in res.text and "VirtualService default/reviews" in res.text
    vs = control_plane.get("/api/v1/resources/VirtualService/default/reviews")
    assert [d["weight"] for d in vs["spec"]["http"][0]["route"]] == [50, 50]
    shot(browser, tmp_path, "editor-applied")
    # put it back for the other tests
    control_plane.apply(text.replace("apiVersion", "apiVersion", 1))


def _switch_to(browser, label: str) -> None:
    """Click the default namespace's access-log switch and wait for the page the POST redirects to. The old
    button goes stale while the browser navigates: wait for that first (reading the text of a button that is
    being unloaded raises StaleElementReferenceException, which a plain wait does not ignore)."""
    for _ in range(3):
        old = wait(browser).until(EC.element_to_be_clickable((By.ID, "access-log-default")))
        try:
            old.click()  # a stale button was not clicked: find the current one and click that
            break
        except StaleElementReferenceException:
            continue
    wait(browser, 30).until(EC.staleness_of(old))
    # the new page's button is looked up and read in one step; if the document is replaced between the two
    # (Chromium: "Node with given id does not belong to the document"), look it up again
    WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: label in d.find_element(By.ID, "access-log-default").text)


def test_access_log_switch_applies_a_telemetry_resource(control_plane, console_factory, browser):
    c = console_factory()
    browser.get(c.url + "/config")
    assert "Turn on" in wait(browser).until(EC.presence_of_element_located((By.ID, "access-log-default"))).text
    _switch_to(browser, "Turn off")
    tel = control_plane.get("/api/v1/resources/Telemetry/default/mizzen-access-log")
    assert tel["spec"]["accessLogging"][0].get("disabled", False) is False
    _switch_to(browser, "Turn on")
    tel = control_plane.get("/api/v1/resources/Telemetry/default/mizzen-access-log")
    assert tel["spec"]["accessLogging"][0]["disabled"] is True


ROUTER = """\
apiVersion: mizzen.dev/v1
kind: Router
metadata: {name: web, namespace: shop}
spec:
  port: 9090
  subsets:
  - branch: master
    versions: {v1: 90, v2: 10}
"""


def test_router_weights_form_applies_and_refuses_a_bad_sum(control_plane, console_factory, browser, tmp_path):
    control_plane.apply(ROUTER)
    c = console_factory()
    browser.get(c.url + "/config")

    def set_weights(v1: str, v2: str) -> None:
        for v, w in (("v1", v1), ("v2", v2)):
            box = wait(browser).until(EC.presence_of_element_located((By.ID, f"router-shop-web-0-{v}")))
            box.clear()
            box.send_keys(w)
        form = browser.find_element(By.ID, "router-shop-web")
        form.find_element(By.TAG_NAME, "button").click()
        wait(browser, 30).until(EC.staleness_of(form))  # the old page's #resources must not answer the wait below

    set_weights("60", "50")
    issues = wait(browser).until(EC.presence_of_element_located((By.ID, "issues")))
    assert "sum to 110, must be 100" in issues.text
    assert control_plane.get("/api/v1/resources/Router/shop/web")["spec"]["subsets"][0]["versions"] == {"v1": 90, "v2": 10}
    shot(browser, tmp_path, "router-refused")
    browser.get(c.url + "/config")
    set_weights("50", "50")
    wait(browser).until(EC.presence_of_element_located((By.ID, "resources")))
    assert control_plane.get("/api/v1/resources/Router/shop/web")["spec"]["subsets"][0]["versions"] == {"v1": 50, "v2": 50}
