"""Deterministic demo data sets written as batch files: customer churn (generated) and wine (3 classes).

Each churn batch is what a CRM export would look like: numeric and categorical columns, a few
missing values, about one churner in four, a signal a model can learn, and (optionally)
a slow drift across batches so later batches differ from earlier ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CONTRACT_TYPES = ("month-to-month", "one_year", "two_year")
PAYMENT_METHODS = ("electronic_check", "mailed_check", "bank_transfer", "credit_card")
INTERNET_SERVICES = ("dsl", "fiber_optic", "none")
REGIONS = ("north", "south", "east", "west")


def generate_churn_batch(batch_number: int, n_rows: int, seed: int = 42, drift: float = 0.0) -> pd.DataFrame:
    """One batch of customers; the same (batch_number, n_rows, seed, drift) gives the same rows.

    `drift` moves prices up and the churn rate of fibre customers with each batch, so a
    model trained on batch 1 slowly loses accuracy on later batches.
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be at least 1, got {n_rows}")
    rng = np.random.default_rng([seed, batch_number])
    shift = drift * (batch_number - 1)

    contract = rng.choice(CONTRACT_TYPES, size=n_rows, p=[0.55, 0.25, 0.20])
    payment = rng.choice(PAYMENT_METHODS, size=n_rows, p=[0.35, 0.2, 0.2, 0.25])
    internet = rng.choice(INTERNET_SERVICES, size=n_rows, p=[0.35, 0.45, 0.20])
    region = rng.choice(REGIONS, size=n_rows)
    tenure = np.clip(rng.gamma(1.6, 18.0, size=n_rows), 0, 72).astype(int)
    age = np.clip(rng.normal(45, 15, size=n_rows), 18, 90).astype(int)
    support_tickets = rng.poisson(1.2, size=n_rows)
    num_products = 1 + rng.binomial(4, 0.3, size=n_rows)
    base_price = np.select([internet == "fiber_optic", internet == "dsl"], [80.0, 55.0], default=25.0)
    monthly = np.round(np.clip(base_price * (1 + shift) + 8 * num_products + rng.normal(0, 8, n_rows), 18, 250), 2)
    total = np.round(monthly * np.maximum(tenure, 1) * rng.uniform(0.9, 1.05, n_rows), 2)

    logit = (
        -1.9
        + 1.3 * (contract == "month-to-month")
        - 0.6 * (contract == "two_year")
        - 0.035 * tenure
        + 0.018 * (monthly - 65)
        + 0.35 * support_tickets
        + 0.45 * (payment == "electronic_check")
        + (0.4 + 2 * shift) * (internet == "fiber_optic")
        - 0.25 * (num_products - 1)
        + 0.006 * (age - 45)
    )
    churned = (rng.uniform(size=n_rows) < 1 / (1 + np.exp(-logit))).astype(int)

    frame = pd.DataFrame(
        {
            "customer_id": [f"C{batch_number:04d}-{i:07d}" for i in range(n_rows)],
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "contract_type": contract,
            "payment_method": payment,
            "internet_service": internet,
            "region": region,
            "age": pd.array(age, dtype="Int64"),
            "support_tickets": support_tickets,
            "num_products": num_products,
            "churned": churned,
        }
    )
    # Real exports have holes: a customer who never gave an age, a bill not yet totalled.
    for column, rate in (("total_charges", 0.03), ("age", 0.02), ("payment_method", 0.01)):
        frame.loc[rng.uniform(size=n_rows) < rate, column] = None
    return frame


def write_demo_batches(
    incoming_dir: Path,
    n_batches: int,
    n_rows: int,
    seed: int = 42,
    drift: float = 0.0,
    file_format: str = "csv",
    first_batch: int = 1,
) -> list[Path]:
    """Write churn batches as `batch_0001.csv`, `batch_0002.csv`, ... and return their paths."""
    frames = {
        number: generate_churn_batch(number, n_rows, seed=seed, drift=drift)
        for number in range(first_batch, first_batch + n_batches)
    }
    return write_batch_files(incoming_dir, frames, file_format)


def write_batch_files(incoming_dir: Path, frames: dict[int, pd.DataFrame], file_format: str = "csv") -> list[Path]:
    """Write each frame as `batch_<number>.csv` (or .parquet) and return the paths.

    Each file is written under a temporary name and renamed, so a watcher never sees half a batch.
    """
    if file_format not in ("csv", "parquet"):
        raise ValueError(f"file_format must be 'csv' or 'parquet', got {file_format!r}")
    incoming_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, frame in frames.items():
        path = incoming_dir / f"batch_{number:04d}.{file_format}"
        partial = path.with_name(f".{path.name}.partial")
        if file_format == "csv":
            frame.to_csv(partial, index=False)
        else:
            frame.to_parquet(partial, index=False)
        partial.replace(path)
        paths.append(path)
    return paths


def wine_batches(n_batches: int, seed: int = 42) -> list[pd.DataFrame]:
    """scikit-learn's bundled wine data set (178 wines, 13 measurements, three cultivars), shuffled
    with `seed` and cut into `n_batches` batches of nearly equal size: the 3-class demo.

    Bundled with scikit-learn, so nothing is downloaded. The target `cultivar` is a category
    (`class_0`, `class_1`, `class_2`), the id `wine_id` the wine's row in the original data.
    """
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True)
    # Below about 40 rows a batch's held-out part (a fifth) cannot hold every cultivar several times.
    most = len(wine.frame) // 40
    if not 1 <= n_batches <= most:
        raise ValueError(f"the wine data set has {len(wine.frame)} rows: 1 to {most} batches, got {n_batches}")
    # Column names reach SQL as identifiers: `od280/od315_of_diluted_wines` has a slash.
    features = wine.data.rename(columns=lambda name: name.replace("/", "_"))
    frame = pd.concat(
        [
            pd.DataFrame({"wine_id": [f"W{index:04d}" for index in wine.frame.index]}),
            features,
            pd.DataFrame({"cultivar": [str(wine.target_names[label]) for label in wine.target]}),
        ],
        axis=1,
    )
    shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return [shuffled.iloc[rows].reset_index(drop=True) for rows in np.array_split(np.arange(len(shuffled)), n_batches)]
