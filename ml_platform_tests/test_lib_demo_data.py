"""The demo churn generator: deterministic, imbalanced, with holes and drift, written atomically."""

from __future__ import annotations

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from ml_platform.lib.config import load_config
from ml_platform.lib.demo_data import generate_churn_batch, wine_batches, write_demo_batches
from ml_platform.lib.settings import DEFAULT_CONFIG_PATH

MISSING_COLUMNS = ("total_charges", "age", "payment_method")


def test_same_seed_gives_the_same_frame():
    assert_frame_equal(generate_churn_batch(3, 500, seed=7), generate_churn_batch(3, 500, seed=7))


def test_different_seed_gives_a_different_frame():
    first = generate_churn_batch(1, 500, seed=1)
    second = generate_churn_batch(1, 500, seed=2)

    assert not first.equals(second)
    assert first["monthly_charges"].tolist() != second["monthly_charges"].tolist()


def test_different_batches_have_different_customers():
    first = generate_churn_batch(1, 100)
    second = generate_churn_batch(2, 100)

    assert first["customer_id"].iloc[0] == "C0001-0000000"
    assert set(first["customer_id"]).isdisjoint(second["customer_id"])
    assert first["customer_id"].is_unique


def test_columns_follow_the_default_data_contract():
    data = load_config(DEFAULT_CONFIG_PATH).data
    frame = generate_churn_batch(1, 2000)

    assert list(frame.columns) == list(data.columns)
    for name, spec in data.columns.items():
        values = frame[name].dropna()
        if spec.allowed is not None:
            assert set(values) <= set(spec.allowed), name
        if spec.min is not None:
            assert values.min() >= spec.min, name
        if spec.max is not None:
            assert values.max() <= spec.max, name
        if not spec.nullable:
            assert frame[name].notna().all(), name


def test_churners_are_a_minority():
    churn_rate = generate_churn_batch(1, 5000)["churned"].mean()

    assert 0.1 < churn_rate < 0.4


def test_only_the_documented_columns_have_missing_values():
    frame = generate_churn_batch(1, 5000)

    missing = frame.isna().sum()
    for column in MISSING_COLUMNS:
        assert 0 < missing[column] < 0.1 * len(frame), column
    assert missing.drop(list(MISSING_COLUMNS)).sum() == 0


def test_drift_raises_the_mean_monthly_charges_of_later_batches():
    first = generate_churn_batch(1, 3000, drift=0.05)["monthly_charges"].mean()
    fifth = generate_churn_batch(5, 3000, drift=0.05)["monthly_charges"].mean()
    fifth_without_drift = generate_churn_batch(5, 3000, drift=0.0)["monthly_charges"].mean()

    assert fifth > first + 5
    assert fifth > fifth_without_drift + 5
    assert fifth_without_drift == pytest.approx(first, rel=0.05)


def test_drift_does_not_change_the_first_batch():
    assert_frame_equal(generate_churn_batch(1, 300, drift=0.2), generate_churn_batch(1, 300, drift=0.0))


@pytest.mark.parametrize("n_rows", [0, -5])
def test_fewer_than_one_row_is_refused(n_rows):
    with pytest.raises(ValueError, match=f"n_rows must be at least 1, got {n_rows}"):
        generate_churn_batch(1, n_rows)


def test_write_demo_batches_writes_numbered_csv_files_and_no_partial_files(tmp_path):
    incoming = tmp_path / "incoming"

    paths = write_demo_batches(incoming, 3, 50, seed=5)

    assert paths == [incoming / "batch_0001.csv", incoming / "batch_0002.csv", incoming / "batch_0003.csv"]
    assert sorted(path.name for path in incoming.iterdir()) == ["batch_0001.csv", "batch_0002.csv", "batch_0003.csv"]
    written = pd.read_csv(paths[1])
    expected = generate_churn_batch(2, 50, seed=5)
    assert written["customer_id"].tolist() == expected["customer_id"].tolist()
    assert written["monthly_charges"].tolist() == expected["monthly_charges"].tolist()


def test_write_demo_batches_writes_parquet_that_reads_back_identical(tmp_path):
    paths = write_demo_batches(tmp_path, 2, 50, file_format="parquet", first_batch=4)

    assert [path.name for path in paths] == ["batch_0004.parquet", "batch_0005.parquet"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["batch_0004.parquet", "batch_0005.parquet"]
    assert_frame_equal(pd.read_parquet(paths[0]), generate_churn_batch(4, 50))


def test_write_demo_batches_refuses_an_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="file_format must be 'csv' or 'parquet', got 'json'"):
        write_demo_batches(tmp_path / "incoming", 1, 10, file_format="json")

    assert not (tmp_path / "incoming").exists()


def test_wine_batches_cut_the_178_wines_into_seeded_batches_each_holding_the_three_cultivars():
    batches = wine_batches(2, seed=3)

    assert [len(batch) for batch in batches] == [89, 89]
    assert all(set(batch["cultivar"]) == {"class_0", "class_1", "class_2"} for batch in batches)
    assert not set(batches[0]["wine_id"]) & set(batches[1]["wine_id"])
    assert_frame_equal(batches[1], wine_batches(2, seed=3)[1])
    assert "od280_od315_of_diluted_wines" in batches[0].columns  # a plain SQL name, no slash


def test_wine_batches_refuse_batches_too_small_to_hold_every_cultivar():
    with pytest.raises(ValueError, match="the wine data set has 178 rows: 1 to 4 batches, got 5"):
        wine_batches(5)
