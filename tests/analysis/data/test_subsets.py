"""Class subsets (--classes): parsing, selection and relabelling, stratified totals, run names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from analysis.data import (
    RawData,
    classes_label,
    load_dataset,
    parse_classes,
    select_classes,
)
from analysis.training import TrainConfig, config_from_args, load_run_data, run_name
from tests.analysis.data.test_data import write_fmnist


def _raw() -> RawData:
    """Four classes, image value = 10 * label + position, so a relabelled image shows its class."""
    y = torch.tensor([0, 1, 2, 3, 2, 1, 0, 3])
    x = (10 * y + torch.arange(8)).to(torch.uint8).view(8, 1, 1, 1)
    return RawData(x, y, x.clone(), y.clone(), ["a", "b", "c", "d"])


def test_parse_classes_indices_and_names():
    assert parse_classes("0,2,3,4,6") == (0, 2, 3, 4, 6)
    assert parse_classes("T-shirt/top, Pullover") == ("T-shirt/top", "Pullover")
    with pytest.raises(ValueError, match="separated by commas"):
        parse_classes("0,,2")


def test_select_classes_keeps_and_relabels_in_the_given_order():
    sub = select_classes(_raw(), [2, "a"])  # class 2 becomes 0, class 0 becomes 1
    assert sub.classes == ["c", "a"]
    # images of class 0 (values 0, 6) and class 2 (22, 24), in the data's order
    assert sub.train_x.flatten().tolist() == [0, 22, 24, 6]
    assert sub.train_y.tolist() == [1, 0, 0, 1]
    assert sub.test_y.tolist() == [1, 0, 0, 1]
    assert select_classes(_raw(), ()) is not None and select_classes(_raw(), ()).classes == list("abcd")


@pytest.mark.parametrize("classes, message", [
    ([7], "no class 7; the data set has 4 classes: 0=a"),
    (["zebra"], "no class named 'zebra'"),
    ([1, "b"], "listed twice"),
    ([1], "at least 2 classes"),
])
def test_select_classes_refuses_bad_subsets(classes, message):
    with pytest.raises(ValueError, match=message):
        select_classes(_raw(), classes)


def test_classes_label():
    assert classes_label((0, 2, 3, 4, 6)) == "c0.2.3.4.6"
    assert classes_label(("T-shirt/top", "Ankle boot")) == "cT_shirt_top.Ankle_boot"
    long = classes_label(tuple(range(30)))
    assert long.startswith("c30classes-") and len(long) < 40
    assert classes_label(()) == ""


def test_load_dataset_subset_totals_are_stratified(tmp_path: Path):
    write_fmnist(tmp_path, gz=False, n_train=200, n_test=40)  # 20 per class
    d = load_dataset("fashion-mnist", data_dir=tmp_path, classes=(1, 5, 7, 8, 9),
                     train_size=50, val_size=25, seed=3)
    assert d.classes == ["Trouser", "Sandal", "Sneaker", "Bag", "Ankle boot"]
    assert torch.bincount(d.train_y).tolist() == [10] * 5  # a total of 50: 10 per class
    assert torch.bincount(d.val_y).tolist() == [5] * 5
    assert torch.bincount(d.test_y).tolist() == [4] * 5  # the whole test split of those classes
    assert d.num_classes == 5


def test_run_names_of_source_and_target_differ_and_config_round_trips(tmp_path: Path):
    import argparse

    from analysis.training import add_training_options

    p = argparse.ArgumentParser()
    add_training_options(p)
    src = config_from_args(p.parse_args(["--classes", "0,2,3,4,6", "--train-size", "50"]))
    tgt = config_from_args(p.parse_args(["--classes", "1,5,7,8,9", "--train-size", "50"]))
    assert src.classes == (0, 2, 3, 4, 6)
    assert run_name(src) != run_name(tgt)
    assert "-c0.2.3.4.6-n50-" in run_name(src)
    assert TrainConfig.from_dict({"classes": [1, 5]}).classes == (1, 5)  # as config.json has it
    with pytest.raises(SystemExit):
        p.parse_args(["--classes", "0,,1"])
    with pytest.raises(ValueError, match="--classes takes class indices"):
        TrainConfig(classes=(-1, 2)).check()
    write_fmnist(tmp_path, gz=False, n_train=100, n_test=20)
    data = load_run_data(TrainConfig(data_dir=str(tmp_path), classes=("Bag", "Trouser"),
                                     val_size=2))
    assert data.classes == ["Bag", "Trouser"] and set(data.test_y.tolist()) == {0, 1}
