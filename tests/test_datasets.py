"""medclf.tracking.datasets: a run's splits as MLflow dataset inputs, read back with
``get_run(...).inputs``; the digest follows the samples, labels and file sizes."""

from __future__ import annotations

import json

import mlflow
import pandas as pd

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


def _logged(client, experiment: str, table: pd.DataFrame, sizes) -> dict:
    run = client.create_run(experiment)
    log_split_inputs(client, run.info.run_id, table, sizes, "folder:cells", "/data/cells")
    return client.get_run(run.info.run_id)


def test_three_inputs_with_split_contexts_and_a_digest_that_follows_the_labels(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("datasets", artifact_location=tmp_path.as_uri())
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
