"""The UIs in a real browser: `ml-platform ui` starts Dagster (webserver and daemon) and MLflow on a
platform with two demo batches, one run; Chromium, driven by Playwright, reads the asset graph,
materializes a batch from the launchpad, reads the automation, the MLflow runs and the champion.

The browser is Debian's Chromium (`make test` installs it); Playwright's own download needs the
internet. A browser that cannot start fails these tests with the reason, it does not skip them.
Screenshots of every page go to `test-output/screenshots/`; the asset graph and the evaluation
report also go to `docs/screenshots/` for the README when missing there or with UPDATE_README_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psutil
import pytest

from ml_platform.lib.settings import PROJECT_ROOT
from ml_platform_tests.conftest import Cli, small_config
from ml_platform_tests.servers import answers, free_port, wait_for

pytestmark = pytest.mark.timeout(1500)

ML_PLATFORM = str(Path(sys.executable).parent / "ml-platform")
SCREENSHOTS = PROJECT_ROOT / "test-output" / "screenshots"
README_SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1400, "height": 900}
# Without the networking flags Chromium stalls on a closed network (component updates, sync).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UI_TIMEOUT_MS = 120_000  # a React app on 2 busy cores: first paint can take a while
STAGES = {
    "ingestion": ["raw_batch"],
    "features": ["features", "stg_batch"],
    "training": ["gradient_boosting_model", "logistic_regression_model", "random_forest_model", "training_data"],
    "evaluation": ["champion_backtest", "champion_model", "evaluation_report"],
    "predictions": ["predictions"],
    "drift": ["drift_report"],
}
AUTOMATION = {
    "retraining_schedule": "Scheduled",
    "backtest_schedule": "Scheduled",
    "pipeline_schedule": "Scheduled",
    "new_batch_sensor": "Standard sensor",
    "run_failure_notifications": "Run status sensor",
    "run_success_monitor": "Run status sensor",
    "dead_run_sensor": "Standard sensor",
    "notification_outbox": "Standard sensor",
}


@dataclass
class RunningUIs:
    dagster: str
    mlflow: str
    home: Path
    dagster_home: Path
    tracking_uri: str

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.dagster_home))


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def describe(processes: list[psutil.Process]) -> list[str]:
    described = []
    for process in processes:
        try:
            described.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            described.append(f"{process.pid} (gone)")
    return described


@pytest.fixture(scope="module")
def uis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningUIs]:
    """A platform with batches 1 and 2 (batch 1 run, so MLflow has runs and a champion) and
    `ml-platform ui` serving it; stopped with SIGINT at the end, leaving no process behind."""
    home = tmp_path_factory.mktemp("ui")
    config = small_config(
        **{
            # No cron tick or new-file sensor may start runs of its own: the new-batch sensor would
            # run batch_0002 as soon as the daemon starts, before the test launches it from the UI.
            "automation.schedules.retraining.enabled": False,
            "automation.schedules.backtest.enabled": False,
            "automation.schedules.pipeline.enabled": False,
            "automation.new_batch_sensor.enabled": False,
        }
    )
    cli = Cli(home, config)
    for command in (["demo-data", "--batches", "2", "--rows", "1000"], ["batches", "scan"], ["run", "batch_0001"]):
        cli(*command)
    env = {**cli.env, "COLUMNS": "200"}
    # Dagster's UI shows a "Join the Dagster community" dialog on a first visit, whenever it loads:
    # late enough, it lands on top of the launchpad and takes its clicks. Seen already, as after `dagster dev`
    # has been dismissed once (the webserver reads this file: dagster/_core/nux.py).
    nux = Path(env["DAGSTER_HOME"]) / ".nux" / "nux.yaml"
    nux.parent.mkdir(parents=True, exist_ok=True)
    nux.write_text("seen: 1\n")

    dagster_port, mlflow_port = free_port(), free_port()
    output_path = home / "ui.out"
    with output_path.open("w") as output:
        process = subprocess.Popen(
            [ML_PLATFORM, "ui", "--dagster-port", str(dagster_port), "--mlflow-port", str(mlflow_port)],
            env=env,
            cwd=home,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so only the signal the test sends reaches it
        )
    running = RunningUIs(
        dagster=f"http://127.0.0.1:{dagster_port}",
        mlflow=f"http://127.0.0.1:{mlflow_port}",
        home=home / "home",
        dagster_home=Path(env["DAGSTER_HOME"]),
        tracking_uri=f"sqlite:///{home / 'home' / 'mlflow' / 'mlflow.db'}",
    )
    tree: list[psutil.Process] = []
    try:
        wait_for(
            lambda: process.poll() is not None or "Ctrl-C stops both" in output_path.read_text(),
            600,
            "`ml-platform ui` to report both UIs ready",
        )
        printed = output_path.read_text()
        assert process.poll() is None, f"ml-platform ui exited {process.returncode}:\n{printed}"
        assert running.dagster in printed and running.mlflow in printed, printed
        assert answers(f"{running.dagster}/server_info") and answers(f"{running.mlflow}/health")
        tree = process_tree(process.pid)
        yield running
    finally:
        tree += process_tree(process.pid)  # run workers started meanwhile too
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            for leftover in still_running(tree):
                leftover.kill()
            raise
    printed = output_path.read_text()
    assert process.returncode == 0, printed
    assert "stopped Dagster and MLflow" in printed, printed
    assert not still_running(tree), f"left running after Ctrl-C: {describe(still_running(tree))}"
    assert not answers(f"{running.dagster}/server_info") and not answers(f"{running.mlflow}/health")


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under Playwright; fails (never skips) with the reason when it cannot start."""
    from playwright.sync_api import Error, sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("no `chromium` on PATH: `make test` installs it (apt-get install -y chromium)", pytrace=False)
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=120_000)
        except Error as error:
            pytest.fail(f"Chromium ({executable}) did not start: {error}", pytrace=False)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest):
    """A fresh page at 1400x900; Dagster's one-time newsletter dialog is dismissed whenever it shows.
    Tests ask for it before the UIs, so a browser that cannot start fails them at once. A failed
    test leaves its last screen and DOM in test-output/screenshots/failed-<test>.*."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    page.add_locator_handler(
        page.get_by_text("Join the Dagster community"), lambda _: page.get_by_role("button", name="Skip").click()
    )
    # MLflow 3 asks once to switch to its new registry UI (the one that shows aliases): yes.
    page.add_locator_handler(
        page.get_by_text("Flexible, governed deployments"),
        lambda _: page.get_by_role("button", name="Try it now").click(),
    )
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"failed-{request.node.name}.png")
        (SCREENSHOTS / f"failed-{request.node.name}.html").write_text(page.content())
    context.close()


def screenshot(page, name: str, readme: bool = False) -> Path:
    """Save the page under test-output/screenshots/. A README screenshot is copied to docs/screenshots/
    when it is missing there or UPDATE_README_SCREENSHOTS=1: committed images change only on purpose."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path)
    readme_copy = README_SCREENSHOTS / path.name
    if readme and (not readme_copy.exists() or os.environ.get("UPDATE_README_SCREENSHOTS") == "1"):
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, readme_copy)
    return path


def close_mlflow_assistant(page) -> None:
    """MLflow 3 opens its (LLM) assistant beside every page; it only takes room here."""
    close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.count() and close.is_visible():
        close.click()


def sidebar_groups(page) -> dict[str, list[str]]:
    """The lineage page's sidebar tree, group by group: rows in order, a group row marked by its icon."""
    groups: dict[str, list[str]] = {}
    current = None
    for row in page.locator("[data-index]").all():
        name = row.locator("[title]").first.get_attribute("title")
        if row.get_by_role("img", name="asset_group").count():
            current = groups.setdefault(name, [])
        elif current is not None:
            current.append(name)
    return groups


def test_materializing_a_batch_from_the_launchpad_runs_it_under_the_daemon(page, uis):
    # First in the module, so the later screenshots show both batches materialized.
    from playwright.sync_api import expect

    with uis.instance() as instance:
        before = {record.dagster_run.run_id for record in instance.get_run_records()}
    page.goto(f"{uis.dagster}/locations/ml_platform/jobs/batch_pipeline")
    page.get_by_role("button", name=re.compile("Materialize all")).click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    expect(dialog.get_by_text("Launch runs to materialize 11 assets")).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem").filter(has_text=re.compile(r"^batch_0002")).first.click()
    dialog.get_by_text("Launch runs to materialize").click()  # closes the partition list
    expect(page.get_by_placeholder("Filter partitions")).to_be_hidden()
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    screenshot(page, "launchpad")
    dialog.get_by_role("button", name="Launch 1 run").click()

    with uis.instance() as instance:

        def new_runs() -> list[dg.DagsterRun]:
            return [r.dagster_run for r in instance.get_run_records() if r.dagster_run.run_id not in before]

        def finished() -> dg.DagsterRun | None:
            latest = instance.get_run_by_id(run.run_id)
            return latest if latest.is_finished else None

        [run] = wait_for(new_runs, 120, "the run launched from the UI")  # the daemon dequeues it
        assert run.job_name == "batch_pipeline" and run.tags["dagster/partition"] == "batch_0002"
        assert wait_for(finished, 600, "the run to end").status == dg.DagsterRunStatus.SUCCESS
        assert instance.get_materialized_partitions(dg.AssetKey("champion_model")) == {"batch_0001", "batch_0002"}

    page.goto(f"{uis.dagster}/runs")
    row = page.locator("[data-index]").filter(has=page.locator(f'a[href="/runs/{run.run_id}"]'))
    expect(row).to_contain_text("Success", timeout=60_000)
    expect(row).to_contain_text("batch_0002")
    expect(row).to_contain_text("Manually launched")
    screenshot(page, "run-succeeded")


def test_asset_graph_shows_every_asset_grouped_by_stage(page, uis):
    from playwright.sync_api import expect

    page.goto(f"{uis.dagster}/asset-groups")
    page.get_by_role("button", name="settings", exact=True).click()
    page.get_by_role("menuitem", name=re.compile("Expand all groups")).click()
    page.keyboard.press("Escape")
    for stage in STAGES:  # each stage is a group in the graph, shown as a box with its name
        expect(page.locator("[data-index]").filter(has_text=stage).first).to_be_visible()
    for toggle in page.get_by_role("button", name="arrow_drop_down", exact=True).all()[: len(STAGES)]:
        toggle.click()  # open every group in the sidebar tree
    expect(page.locator("[data-index]")).to_have_count(len(STAGES) + sum(map(len, STAGES.values())))

    assert {stage: sorted(assets) for stage, assets in sidebar_groups(page).items()} == STAGES
    screenshot(page, "asset-graph", readme=True)


def test_automation_page_lists_every_schedule_and_sensor(page, uis):
    from playwright.sync_api import expect

    page.goto(f"{uis.dagster}/automation")
    for name, kind in AUTOMATION.items():
        item = page.locator("[data-index]").filter(has=page.get_by_text(name, exact=True))
        expect(item).to_be_visible()
        expect(item).to_contain_text(kind)
    screenshot(page, "automation")


def test_evaluation_report_page_shows_the_batch_metadata(page, uis):
    from playwright.sync_api import expect

    page.goto(f"{uis.dagster}/assets/evaluation_report?view=partitions&partition=batch_0001")
    expect(page.get_by_text("Latest materialization")).to_be_visible()
    for key in ("winner", "winner_roc_auc", "metrics", "report_file"):
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"reports/batch_0001/evaluation_report\.json"))).to_be_visible()
    screenshot(page, "evaluation-report", readme=True)


def test_mlflow_lists_the_runs_and_the_champion_alias(page, uis):
    from mlflow import MlflowClient
    from playwright.sync_api import expect

    client = MlflowClient(tracking_uri=uis.tracking_uri, registry_uri=uis.tracking_uri)
    experiment = client.get_experiment_by_name("ml_platform/churn")
    champion = client.get_model_version_by_alias("churn_classifier", "champion")

    page.goto(f"{uis.mlflow}/#/experiments")
    expect(page.get_by_role("link", name="ml_platform/churn")).to_be_visible()
    page.goto(f"{uis.mlflow}/#/experiments/{experiment.experiment_id}/runs")
    close_mlflow_assistant(page)
    for model in ("gradient_boosting", "logistic_regression", "random_forest"):
        expect(page.get_by_role("link", name=f"{model}-batch_0001", exact=True)).to_be_visible()
    screenshot(page, "mlflow-runs")

    page.goto(f"{uis.mlflow}/#/models")
    page.get_by_role("link", name="churn_classifier", exact=True).click()
    close_mlflow_assistant(page)
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Version {champion.version}", exact=True))
    row.scroll_into_view_if_needed()
    # The alias tag (the version's own tags show `decision.alias: champion` too).
    expect(row.get_by_role("status", name="champion")).to_be_visible()
    screenshot(page, "mlflow-model")
