"""The zoo: every model behind docs/RESULTS.md is in the repository, unchanged, and loads."""

import json

import numpy as np
import pytest

from sgt_tfmot import load_model, zoo
from sgt_tfmot._checks import InputError

ENTRIES = zoo.entries()


def test_the_zoo_has_a_manifest_with_the_facts_of_each_model():
    assert ENTRIES, "zoo/manifest.json lists no model"
    for name, entry in ENTRIES.items():
        for key in ("command", "commit", "dataset", "bits", "test_accuracy", "sha256"):
            assert entry.get(key) not in (None, ""), (name, key)
        assert entry["size_bytes"] < 3 * 1024 * 1024, name  # no file over 3 MiB


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_each_entry_is_unchanged_and_loads(name):
    assert zoo.verify(name), f"zoo/{name}/model.h5 does not match its sha256"
    model = load_model(f"zoo:{name}")
    metrics = json.loads((zoo.resolve(f"zoo:{name}") / "metrics.json").read_text())
    assert metrics["test_accuracy"] == ENTRIES[name]["test_accuracy"]
    shape = tuple(model.inputs[0].shape[1:])
    scores = model.predict(np.zeros((1, *shape), np.float32), verbose=0)
    assert scores.shape == (1, metrics["data"]["num_classes"] if "data" in metrics else 10)


def test_an_unknown_zoo_name_lists_the_zoo():
    with pytest.raises(InputError, match=r"No zoo model 'nope'. The zoo has: "):
        load_model("zoo:nope")
