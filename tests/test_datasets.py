"""medclf.tracking.datasets: a run's splits as MLflow dataset inputs, read back with
``get_run(...).inputs``; the digest follows the samples, labels and file sizes; runs that
log the same dataset at the same moment on one server (a team's search) both get it."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from medclf.tracking.datasets import log_split_inputs, run_datasets

TABLE = pd.DataFrame(
    {
        "sample": [f"{c}/{i}.png" for c in ("a", "b") for i in range(4)],
        "split": ["train", "train", "val", "test"] * 2,
        "group": [""] * 8,
        "label": ["a"] * 4 + ["b"] * 4,
    }
)
SIZES = [100 + i for i in range(8)]


# MLflow's database store looks for a dataset, then inserts it: two runs logging the same
# data at the same moment can both insert it, and one fails on the unique key (seen in the
# team test, PostgreSQL). That interleaving cannot be forced from outside, so its error is
# raised by a wrapper around a real client on a real store.
POSTGRES_DUPLICATE = (
    "BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates unique "
    'constraint "dataset_pk" DETAIL: Key (experiment_id, name, digest)=(1, folder:images, '
    "dfad2d3fef04) already exists. [SQL: INSERT INTO datasets (dataset_uuid, ...)]"
)


class RacingClient:
    """A real MlflowClient whose first ``failures`` log_inputs calls fail with ``error``
    before reaching the store."""

    def __init__(self, client, error: Exception, failures: int = 1) -> None:
        self.client, self.error, self.failures, self.calls = client, error, failures, 0

    def log_inputs(self, run_id, datasets):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.client.log_inputs(run_id, datasets=datasets)

    def create_run(self, experiment):
        return self.client.create_run(experiment)

    def get_run(self, run_id):
        return self.client.get_run(run_id)


def _logged(client, experiment: str, table: pd.DataFrame, sizes) -> dict:
    run = client.create_run(experiment)
    log_split_inputs(client, run.info.run_id, table, sizes, "folder:cells", "/data/cells")
    return client.get_run(run.info.run_id)


@pytest.fixture
def store(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    return client, client.create_experiment("datasets", artifact_location=tmp_path.as_uri())


def test_three_inputs_with_split_contexts_and_a_digest_that_follows_the_labels(store):
    client, experiment = store
    first = _logged(client, experiment, TABLE, SIZES)
    inputs = first.inputs.dataset_inputs
    assert len(inputs) == 3
    datasets = run_datasets(first)
    assert sorted(datasets) == ["test", "train", "val"]
    assert {name for name, _ in datasets.values()} == {"folder:cells"}
    train = next(i.dataset for i in inputs if i.tags[0].value == "train")
    assert json.loads(train.source) == {"uri": "/data/cells"}
    assert json.loads(train.profile) == {
        "num_rows": 4,
        "bytes": 100 + 101 + 104 + 105,
        "labels": {"a": 2, "b": 2},
    }
    assert [c["name"] for c in json.loads(train.schema)["mlflow_colspec"]] == [
        "sample",
        "group",
        "label",
    ]

    relabelled = TABLE.copy()
    relabelled.loc[0, "label"] = "b"  # one training image moves to the other class
    second = run_datasets(_logged(client, experiment, relabelled, SIZES))
    assert second["train"][1] != datasets["train"][1]
    assert (second["val"], second["test"]) == (datasets["val"], datasets["test"])

    grown = list(SIZES)
    grown[3] += 1  # a test image was rewritten
    third = run_datasets(_logged(client, experiment, TABLE, grown))
    assert third["test"][1] != datasets["test"][1]
    assert (third["train"], third["val"]) == (datasets["train"], datasets["val"])
    again = run_datasets(_logged(client, experiment, TABLE.iloc[::-1], SIZES[::-1]))
    assert again == datasets  # the same data in another order: the same digests


def test_a_dataset_stored_by_another_run_meanwhile_is_linked_on_the_next_try(store) -> None:
    client, experiment = store
    first = run_datasets(_logged(client, experiment, TABLE, SIZES))
    racing = RacingClient(client, MlflowException(POSTGRES_DUPLICATE))
    second = run_datasets(_logged(racing, experiment, TABLE, SIZES))
    assert racing.calls == 2
    assert second == first and set(second) == {"train", "val", "test"}


def test_other_errors_and_a_lasting_conflict_are_raised(store) -> None:
    client, experiment = store
    other = RacingClient(client, MlflowException("RESOURCE_DOES_NOT_EXIST: run not found"))
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        _logged(other, experiment, TABLE, SIZES)
    assert other.calls == 1
    lasting = RacingClient(client, MlflowException(POSTGRES_DUPLICATE), failures=10)
    with pytest.raises(MlflowException, match="UniqueViolation"):
        _logged(lasting, experiment, TABLE, SIZES)
    assert lasting.calls == 4
