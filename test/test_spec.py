"""The ModelSpec: presets, JSON round trip, validation that names the bad field."""
from dataclasses import replace

import numpy as np
import pytest

from equiseg_ros.spec import (
    DELIVER_CLASSES,
    Modality,
    ModelSpec,
    SpecError,
    deliver_spec,
    get_preset,
    muses_spec,
    synthetic_spec,
)


def test_deliver_preset_matches_reference():
    s = deliver_spec()
    assert s.modality_names == ("rgb", "depth", "event", "lidar")
    assert s.num_classes == 25 and s.classes[0] == "Building" and s.classes[-1] == "Truck"
    assert s.palette[6] == (128, 64, 128)  # Road
    assert s.modality("rgb").mean == (0.485, 0.456, 0.406)
    assert s.modality("depth").representation == "hha"
    for name in ("depth", "event", "lidar"):
        assert s.modality(name).mean == (0.0, 0.0, 0.0) and s.modality(name).std == (1.0, 1.0, 1.0)
    assert s.ignore_index == 255


def test_muses_and_synthetic_presets():
    m = muses_spec()
    assert m.modality_names == ("rgb", "lidar", "radar", "event") and m.num_classes == 19
    assert m.palette[-1] == (119, 11, 32)
    syn = synthetic_spec()
    assert syn.classes == DELIVER_CLASSES and syn.name == "synthetic"
    assert get_preset("deliver", ["lidar", "rgb"]).modality_names == ("lidar", "rgb")


@pytest.mark.parametrize("factory", [deliver_spec, muses_spec, synthetic_spec])
def test_json_round_trip(factory):
    s = factory()
    assert ModelSpec.from_json(s.to_json()) == s


def test_subset_names_and_normalize():
    s = deliver_spec()
    assert s.subset_name([True, False, True, True]) == "REL"
    assert s.subset_name(["lidar", "rgb"]) == "RL"
    img = np.full((4, 5, 3), 255, np.uint8)
    x = s.normalize("event", img)
    assert x.shape == (3, 4, 5) and np.allclose(x, 1.0)
    x = s.normalize("rgb", img)
    assert np.allclose(x[0], (1 - 0.485) / 0.229)


@pytest.mark.parametrize("mutate, field", [
    (lambda s: replace(s, modalities=s.modalities + (s.modalities[0],)), "duplicate modality"),
    (lambda s: replace(s, palette=s.palette[:-1]), "palette"),
    (lambda s: replace(s, modalities=(Modality("rgb", "rgb8", "R", channels=1, mean=(0,), std=(1,)),)),
     "channels"),
    (lambda s: replace(s, modalities=(Modality("x", "thermal", "T"),)), "representation"),
    (lambda s: replace(s, input_size=(100, 128)), "input_size"),
    (lambda s: replace(s, ignore_index=3), "ignore_index"),
    (lambda s: replace(s, classes=s.classes[:-1] + ("Road",)), "classes"),
])
def test_validation_names_the_field(mutate, field):
    with pytest.raises(SpecError, match=field):
        mutate(deliver_spec())


def test_from_json_errors():
    with pytest.raises(SpecError, match="not valid JSON"):
        ModelSpec.from_json("{")
    with pytest.raises(SpecError, match="unknown field"):
        ModelSpec.from_json('{"name": "x", "bogus": 1}')
    d = deliver_spec().to_dict()
    del d["modalities"][1]["representation"]
    with pytest.raises(SpecError, match=r"modalities\[1\]\.representation: missing"):
        ModelSpec.from_dict(d)
