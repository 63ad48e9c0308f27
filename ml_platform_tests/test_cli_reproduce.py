"""`ml-platform reproduce` end to end: the prepared home's champion rebuilt through Dagster, dbt and
MLflow in a scratch home, identical, with the user's home untouched; then its batch file edited."""

from __future__ import annotations

from pathlib import Path

from ml_platform.lib.ingestion import file_content_hash
from ml_platform_tests.conftest import Cli, PlatformUnderTest, small_config


def home_state(platform: PlatformUnderTest) -> dict:
    """What reproducing must leave as it was: the MLflow runs, the registry and its aliases, the Dagster
    runs, and the files of the home."""
    client = platform.mlflow().client()
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    return {
        "mlflow_runs": sorted((run.info.run_id, run.info.end_time) for run in client.search_runs(experiments)),
        "registry": sorted(
            (version.name, version.version, tuple(version.aliases), tuple(sorted(version.tags.items())))
            for version in client.search_model_versions()
        ),
        "dagster_runs": sorted(run.run_id for run in platform.instance.get_runs()),
        "files": sorted(str(path.relative_to(platform.settings.home)) for path in platform.settings.home.rglob("*")),
    }


def test_the_champion_rebuilds_identical_without_touching_the_home_and_not_from_an_edited_batch_file(
    two_batches: PlatformUnderTest, tmp_path: Path
):
    cli = Cli(tmp_path, small_config())
    assert cli.home == two_batches.settings.home
    champion = two_batches.mlflow().champion_version("churn_classifier")
    batch = champion.tags["batch"]
    before = home_state(two_batches)

    identical = cli("reproduce", "churn_classifier@champion")

    source = two_batches.incoming_dir / f"{batch}.csv"
    recorded_hash = file_content_hash(source)
    assert identical.stdout.strip() == (
        f"identical: churn_classifier version {champion.version} (run {champion.run_id}) rebuilt from {batch} "
        f"(sha256 {recorded_hash})"
    )
    assert home_state(two_batches) == before

    unknown = cli("reproduce", "churn_classifier/99", exit_code=2)
    assert "cannot reproduce: churn_classifier/99" in unknown.stderr

    source.write_bytes(source.read_bytes().replace(b"\n", b"\r\n", 1))
    refused = cli("reproduce", f"churn_classifier/{champion.version}", exit_code=2)

    assert f"{source} is not the file" in refused.stderr
    assert f"sha256 {file_content_hash(source)} now, {recorded_hash} recorded" in refused.stderr.replace("\n", "")
