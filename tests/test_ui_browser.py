"""The dashboard in a real browser: Debian's Chromium (`make test` installs it where it can),
driven by Playwright for Python with the system browser's executable (Playwright's own browser
download cannot work offline). Screenshots are kept in test-artifacts/ (or $TUNESMITH_TEST_ARTIFACTS)."""

import os
import shutil
from pathlib import Path

import pytest

from conftest import make_rows, served_in_thread, train_args, write_csv

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="no Chromium: `apt-get install chromium` (make test "
                                                            "installs it where apt-get can run)"),
]
# Chromium on a machine without a network: no sandbox (tests run as root in CI), and none of the
# background connections it would otherwise keep trying.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("TUNESMITH_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, tiny_model):
    """Two finished tiny runs and a data file in a runs folder, the dashboard serving it on loopback."""
    from tunesmith.cli import main
    from tunesmith.serve.security import KeyRing
    from tunesmith.ui.service import create_app

    root = tmp_path_factory.mktemp("browser") / "runs"
    root.mkdir()
    data = write_csv(root / "toy.csv", make_rows(30))
    assert main(train_args(data, tiny_model, root, "alpha", "--epochs", "3", "--eval-every", "4")) == 0
    assert main(train_args(data, tiny_model, root, "beta", "--epochs", "2", "--method", "full", "--eval-every", "4")) == 0
    # The tiny model's folder is allowed: a page may name only built-in models and allowed folders.
    with served_in_thread(create_app(root, KeyRing([]), data_dirs=[Path(tiny_model).parent])) as url:
        yield {"url": url, "root": root, "model": tiny_model}


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra has it)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"ui-{name}.png"), full_page=True)


def unlabelled_controls(page) -> list[str]:
    """Every input, select, textarea and button needs a name a screen reader can say."""
    return page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter((c) => !c.closest('[hidden]'))
        .filter((c) => !((c.labels && c.labels.length) || c.getAttribute('aria-label') || c.textContent.trim()))
        .map((c) => c.outerHTML.slice(0, 120))""")


def overflows(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth > window.innerWidth + 1")


def test_runs_table_run_page_curves_try_it_and_compare(dashboard, page):
    page.goto(dashboard["url"] + "/")
    page.wait_for_selector("tr[data-run='alpha']")
    assert page.inner_text("tr[data-run='alpha'] .status") == "finished"
    assert page.locator("tbody tr").count() == 2
    page.fill("#filter", "beta")
    assert page.locator("tbody tr").count() == 1 and page.locator("tr[data-run='beta']").count() == 1
    page.fill("#filter", "")
    assert unlabelled_controls(page) == []
    assert not overflows(page)
    shot(page, "runs")

    page.click("tr[data-run='alpha'] a")
    page.wait_for_url("**/run?id=alpha")
    curve = page.wait_for_selector("#loss-chart path.curve")
    assert int(curve.get_attribute("data-points")) > 1  # the loss curve is drawn from every history row
    assert page.locator("#val-chart path.curve").count() >= 1
    assert page.locator("#confusion-table tbody tr").count() == 3  # three toy labels
    page.click("#load-errors")
    page.wait_for_selector("#errors-table, #errors p.muted")
    page.fill("#try-text", "great wonderful")
    page.click("#try button[type=submit]")
    label = page.wait_for_selector("#try-label").inner_text()
    assert label in ("negative", "neutral", "positive")
    assert unlabelled_controls(page) == []
    assert not overflows(page)
    shot(page, "run")

    page.set_viewport_size({"width": 375, "height": 740})  # a phone: nothing wider than the screen
    page.reload()
    page.wait_for_selector("#loss-chart path.curve")
    assert not overflows(page)
    shot(page, "run-narrow")

    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(dashboard["url"] + "/")
    page.check("input[aria-label='Select alpha for comparison']")
    page.check("input[aria-label='Select beta for comparison']")
    page.click("#compare")
    page.wait_for_url("**/compare?ids=*")
    page.wait_for_selector("#compare-val path.curve")
    assert page.locator("#compare-val path.curve").count() == 2  # one curve per run, overlaid
    assert page.locator("#compare-table tbody tr").count() == 2
    shot(page, "compare")


def test_start_a_training_run_from_the_page_and_watch_it_finish(dashboard, page):
    page.goto(dashboard["url"] + "/")
    page.wait_for_selector("#start-data option", state="attached")
    page.select_option("#start-data", str(dashboard["root"] / "toy.csv"))
    page.select_option("#start-method", "lora")
    page.fill("#start-name", "gamma")
    page.fill("#start-model", dashboard["model"])
    page.fill("#start-epochs", "2")
    page.fill("#start-max-length", "16")
    page.click("#start button[type=submit]")
    page.wait_for_selector(".job .status")
    page.wait_for_selector(".job .status.finished", timeout=180_000)  # the job's badge, refreshed as it runs
    page.wait_for_selector("tr[data-run='gamma'] .status.finished", timeout=30_000)
    shot(page, "started-run")

    page.click("tr[data-run='gamma'] a")
    page.wait_for_selector("#loss-chart path.curve")
    assert page.inner_text("#status") == "finished"
    assert page.locator("#versus tbody tr").count() >= 1  # its test results are in


def test_a_run_that_logs_rewards_shows_them_beside_its_loss(dashboard, page):
    """GRPO and preference runs log more than a loss per step (reward, KL, answer length): the
    run page draws those too; a classifier's page keeps the figure hidden."""
    import json

    page.goto(dashboard["url"] + "/run?id=alpha")
    page.wait_for_selector("#loss-chart path.curve")
    assert page.locator("#signals-figure").is_hidden()
    rl = dashboard["root"] / "rewards"
    shutil.copytree(dashboard["root"] / "alpha", rl)
    rows = [{"step": s, "epoch": 0, "loss": 0.1, "lr": 1e-4, "reward": s / 4, "kl": s / 100,
             "sample": {"completion": "Answer: 3", "reward": 1.0}} for s in range(1, 5)]
    (rl / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page.goto(dashboard["url"] + "/run?id=rewards")
    page.wait_for_selector("#signals-chart path.curve")
    assert page.locator("#signals-chart path.curve").count() == 2  # reward and kl; the sample is no curve
    shot(page, "run-signals")
