"""The MLflow UI in a real browser: what a user sees of a logged job (issue 13).

One real ``mlflow server`` (SQLite, loopback) per module, holding a job logged by
:func:`service.results.tracking.log_results` from the hand-made result folder of
:func:`tests.integration.mlflow_support.fake_result_dir` (strategies manual, random with three
trial runs, rl), and one headless Chromium (Debian's ``/usr/bin/chromium``) driven by Playwright,
with a fresh browser context (empty local storage, as a first visit) per test. Checked:

- the link sedtune prints opens the experiment on its runs table, not the GenAI overview;
- expanding the job shows one row per strategy, and the trial filter hides the trial runs;
- the chart view's first section is ``compare``, its first chart the held-out F1 with one bar
  per strategy.

Screenshots go to each test's ``tmp_path``; with ``SEDTUNE_WRITE_FIGURES=1`` the two shown in
README.md are also copied to ``tests/figures/``. Without ``/usr/bin/chromium`` the module is
skipped, except in CI (``CI=true``), where that is a failure. Playwright never downloads a
browser here (``PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.results.tracking import TrackingReport, log_results
from service.results.tracking_layout import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, HEADLINE, TRIAL_FILTER
from tests.integration.mlflow_support import MlflowServer, Rest, fake_result_dir, start_server

CHROMIUM = "/usr/bin/chromium"
FIGURES = Path(__file__).resolve().parents[1] / "figures"
JOB_RUN = "fake-job-0123abcd4567"
STRATEGIES = {"manual", "random", "rl"}
HELDOUT_F1 = {"manual": 0.4, "random": 0.43, "rl": 0.42}  # the robust rows of fake_result_dir
TIMEOUT_MS = 20_000
# The MLflow Assistant panel opens itself on a first visit and covers a third of the page.
NO_ASSISTANT = "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


@dataclass
class Logged:
    """The server and the job logged to it."""

    server: MlflowServer
    report: TrackingReport


@pytest.fixture(scope="module")
def chromium_path() -> str:
    """Debian's Chromium; skip without it, except in CI."""
    if not os.path.isfile(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def server_process(chromium_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow server, starting (it boots while the job folder and the browser are made)."""
    srv = start_server(tmp_path_factory.mktemp("mlflow-ui-server"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def result_dir(server_process: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake job's result folder, with its figures (as a job leaves it)."""
    import mlflow  # noqa: F401  (imported now, while the server boots)

    return fake_result_dir(tmp_path_factory.mktemp("mlflow-ui-job"), plots=True)


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    """One headless Chromium for the module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"], headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def logged(server_process: MlflowServer, result_dir: Path, browser: Any) -> Logged:
    """The job logged to the server, through the same path as ``sedtune log``."""
    server_process.wait_ready()
    return Logged(server_process, log_results(str(result_dir), server_process.url))


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page in a fresh context: nothing remembered from an earlier visit.

    Actions and ``expect`` assertions wait up to ``TIMEOUT_MS`` (``expect`` has its own 5 s
    default, too short for the MLflow UI's first render beside a busy test on 2 cores).
    """
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    ctx = browser.new_context(viewport={"width": 1400, "height": 860})
    ctx.add_init_script(NO_ASSISTANT)
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


def open_experiment(page: Any, logged: Logged) -> None:
    """Open the link sedtune prints and wait for the job's row."""
    from playwright.sync_api import expect

    url = logged.report.experiment_url
    assert url is not None and f"compare at {url}" in logged.report.line()
    page.goto(url)
    expect(run_links(page).filter(has_text=JOB_RUN)).to_have_count(1)


def run_links(page: Any) -> Any:
    """The run-name links of the runs table (table and chart views)."""
    return page.locator('.ag-row a[href*="/runs/"]')


def expander(page: Any, run_name: str) -> Any:
    """The expand / collapse button of a run's row."""
    row = page.locator(".ag-row", has=page.get_by_role("link", name=run_name, exact=True))
    return row.locator('button[data-component-id*="runnamecellrenderer"]')


def expand_job(page: Any) -> None:
    """Expand the job's parent run and wait for its strategy rows."""
    from playwright.sync_api import expect

    expander(page, JOB_RUN).click()
    expect(run_links(page)).to_have_count(1 + len(STRATEGIES))


def row_names(page: Any) -> set[str]:
    """The run names in the table."""
    return {t.strip() for t in run_links(page).all_inner_texts()}


def filter_runs(page: Any, filter_string: str, matching: int) -> None:
    """Type a filter into the runs search box and wait for the count of matching runs."""
    from playwright.sync_api import expect

    box = page.get_by_test_id("search-box")
    box.fill(filter_string)
    box.press("Escape")  # close the autocomplete list, so Enter runs the search as typed
    box.press("Enter")
    expect(page.get_by_text(f"{matching} matching runs")).to_be_visible()


def save(page: Any, path: Path, figure: str | None = None) -> None:
    """Screenshot the page (and copy it to tests/figures when asked)."""
    page.screenshot(path=str(path))
    if figure and os.environ.get("SEDTUNE_WRITE_FIGURES") == "1":
        FIGURES.mkdir(exist_ok=True)
        shutil.copyfile(path, FIGURES / figure)


def test_experiment_opens_on_the_runs_table(logged: Logged, page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    tags = Rest(logged.server.url).experiment_tags(logged.report.experiment_id)
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    open_experiment(page, logged)
    page.wait_for_url("**/runs?*")
    assert "/overview" not in page.url
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    expect(page.get_by_text("7 matching runs")).to_be_visible()
    assert row_names(page) == {JOB_RUN}  # the job: one collapsed parent
    save(page, tmp_path / "runs_collapsed.png")


def test_expanded_job_shows_one_row_per_strategy_and_the_filter_hides_trials(
    logged: Logged, page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    open_experiment(page, logged)
    expand_job(page)
    assert row_names(page) == {JOB_RUN, *STRATEGIES}
    # the random strategy's trials are nested under it; expanding it shows them
    expander(page, "random").click()
    expect(run_links(page)).to_have_count(1 + len(STRATEGIES) + 3)
    save(page, tmp_path / "runs_with_trials.png")

    filter_runs(page, TRIAL_FILTER, 1 + len(STRATEGIES))
    expect(run_links(page)).to_have_count(1 + len(STRATEGIES))
    assert row_names(page) == {JOB_RUN, *STRATEGIES}
    save(page, tmp_path / "runs.png", "mlflow_runs.png")


def test_chart_view_starts_with_the_heldout_f1_of_each_strategy(
    logged: Logged, page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    open_experiment(page, logged)
    expand_job(page)
    filter_runs(page, TRIAL_FILTER, 1 + len(STRATEGIES))
    page.locator('label:has(input[name="runs-view-mode"][value="CHART"])').click()
    page.wait_for_url("**compareRunsMode=CHART*")

    section = page.get_by_test_id("experiment-view-compare-runs-section-header").first
    expect(section).to_contain_text(HEADLINE)
    assert section.inner_text().split()[0] == HEADLINE
    card = page.get_by_test_id("experiment-view-compare-runs-card").first
    expect(card.locator("h4")).to_have_text(f"{HEADLINE}/heldout_f1")
    bars = card.locator(".barlayer .point")
    expect(bars).to_have_count(len(STRATEGIES))
    values = sorted(float(t) for t in card.locator(".barlayer .bartext").all_text_contents())
    assert values == sorted(round(v, 2) for v in HELDOUT_F1.values())
    for s in STRATEGIES:
        expect(card.get_by_text(s, exact=True)).to_be_visible()  # the legend names each bar
    save(page, tmp_path / "charts.png", "mlflow_charts.png")
