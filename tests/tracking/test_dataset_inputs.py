"""Dataset inputs when runs start together on one MLflow server: MLflow's database store
looks for a dataset, then inserts it, so two runs logging the same data at the same moment
can both insert it and one fails on the unique key (seen in the team test, PostgreSQL).
That interleaving cannot be forced from outside, so its error is raised by a wrapper around
a real client on a real store; everything else is MLflow's own."""

from __future__ import annotations

import pandas as pd
import pytest

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


@pytest.fixture
def store(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("inputs")
    return client, experiment


def _table() -> tuple[pd.DataFrame, list[int]]:
    table = pd.DataFrame(
        {
            "sample": [f"s{i}" for i in range(6)],
            "split": ["train", "train", "val", "val", "test", "test"],
            "group": [f"s{i}" for i in range(6)],
            "label": ["a", "b"] * 3,
        }
    )
    return table, [100 + i for i in range(6)]


def test_a_dataset_stored_by_another_run_meanwhile_is_linked_on_the_next_try(store) -> None:
    from mlflow.exceptions import MlflowException

    from medclf.tracking.datasets import log_split_inputs, run_datasets

    client, experiment = store
    table, sizes = _table()
    first = client.create_run(experiment).info.run_id
    log_split_inputs(client, first, table, sizes, "folder:images", "/data/images")
    second = client.create_run(experiment).info.run_id
    racing = RacingClient(client, MlflowException(POSTGRES_DUPLICATE))
    log_split_inputs(racing, second, table, sizes, "folder:images", "/data/images")
    assert racing.calls == 2
    assert run_datasets(client.get_run(second)) == run_datasets(client.get_run(first))
    assert set(run_datasets(client.get_run(second))) == {"train", "val", "test"}


def test_other_errors_and_a_lasting_conflict_are_raised(store) -> None:
    from mlflow.exceptions import MlflowException

    from medclf.tracking.datasets import log_split_inputs

    client, experiment = store
    table, sizes = _table()
    run = client.create_run(experiment).info.run_id
    other = RacingClient(client, MlflowException("RESOURCE_DOES_NOT_EXIST: run not found"))
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        log_split_inputs(other, run, table, sizes, "folder:images", "/data/images")
    assert other.calls == 1
    lasting = RacingClient(client, MlflowException(POSTGRES_DUPLICATE), failures=10)
    with pytest.raises(MlflowException, match="UniqueViolation"):
        log_split_inputs(lasting, run, table, sizes, "folder:images", "/data/images")
    assert lasting.calls == 4
