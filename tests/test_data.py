"""Local data sources: CIFAR-10 python batches and image folders, made tiny by the tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imcsim.workloads.data import DataError, load_cifar10, make_task

ROOT = Path(__file__).resolve().parents[1]


def write_cifar(folder: Path, n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two CIFAR-10 python batch files with ``n`` random 32x32 RGB images each; class c is brightness-coded."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    all_x, all_y = [], []
    for name in ("data_batch_1", "test_batch"):
        labels = rng.integers(0, 10, n)
        data = np.clip(rng.normal(labels[:, None] * 25.0, 10.0, (n, 3072)), 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels.tolist(), b"batch_label": name.encode()}, f)
        all_x.append(data)
        all_y.append(labels)
    return np.concatenate(all_x), np.concatenate(all_y)


def write_image_folder(folder: Path, classes=("cat", "dog", "emu"), per_class: int = 6) -> None:
    rng = np.random.default_rng(1)
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.full((12, 10, 3), 60 * c, dtype=np.uint8) + rng.integers(0, 20, (12, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    (folder / "cat" / "notes.txt").write_text("not an image")


def test_cifar_batches_load_channel_major_and_scaled(tmp_path):
    data, labels = write_cifar(tmp_path / "cifar-10-batches-py")
    x, y = load_cifar10(str(tmp_path / "cifar-10-batches-py"))
    assert x.shape == (80, 3, 32, 32)
    assert np.array_equal(y, labels)
    # pixel (channel 1, row 2, column 3) of image 5 is byte 1*1024 + 2*32 + 3 of its row
    assert x[5, 1, 2, 3] == pytest.approx(data[5, 1024 + 2 * 32 + 3] / 255.0)
    one_file, _ = load_cifar10(str(tmp_path / "cifar-10-batches-py" / "test_batch"))
    assert one_file.shape == (40, 3, 32, 32)


def test_cifar_task_selects_relabels_and_resizes(tmp_path):
    _, labels = write_cifar(tmp_path / "c")
    task = make_task("t", [3, 7], "none", 16, 0.25, np.random.default_rng(0), "cifar10", str(tmp_path / "c"))
    assert task.channels == 3
    assert task.x_train.shape[1:] == (3, 16, 16)
    assert len(task.y_train) + len(task.y_test) == int(np.isin(labels, [3, 7]).sum())
    assert set(task.y_train.tolist()) <= {0, 1}
    capped = make_task("t", [3, 7], "none", 16, 0.25, np.random.default_rng(0), "cifar10", str(tmp_path / "c"),
                       max_per_class=2)
    assert len(capped.y_train) + len(capped.y_test) == 4


def test_image_folder_classes_are_sorted_folder_names(tmp_path):
    write_image_folder(tmp_path / "imgs")
    task = make_task("t", [0, 2], "invert", 8, 0.25, np.random.default_rng(0), "image_folder", str(tmp_path / "imgs"))
    assert task.channels == 3
    assert len(task.y_train) + len(task.y_test) == 12  # cat and emu; the .txt file is skipped
    x = np.concatenate([task.x_train.numpy(), task.x_test.numpy()])
    y = np.concatenate([task.y_train.numpy(), task.y_test.numpy()])
    # inverted: cat (dark) images are bright, emu (class 2 -> label 1) images are darker
    assert x[y == 0].mean() > x[y == 1].mean()


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "no such"),
    ("empty", "no data_batch"),
    ("garbage", "not a CIFAR-10 python batch"),
])
def test_bad_cifar_sources_raise_a_clear_error(tmp_path, case, message):
    path = tmp_path / case
    if case == "empty":
        path.mkdir()
    elif case == "garbage":
        path.mkdir()
        (path / "data_batch_1").write_bytes(b"\x00not a pickle")
    with pytest.raises(DataError, match=message):
        load_cifar10(str(path))


def test_image_folder_class_out_of_range(tmp_path):
    write_image_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match=r"valid: 0\.\.2"):
        make_task("t", [0, 5], "none", 8, 0.25, np.random.default_rng(0), "image_folder", str(tmp_path / "imgs"))


def test_continual_run_on_local_cifar_batches(tmp_path, monkeypatch):
    from imcsim.api import run
    from imcsim.config import load_config

    write_cifar(tmp_path / "cifar", n=60)
    monkeypatch.chdir(tmp_path)
    sets = ["workload.model.image_size=16", "workload.train.epochs=1", "workload.pretrain.epochs=1",
            "workload.baselines=[]",
            "workload.pretrain.task={name: src, classes: [0, 1, 2], source: cifar10, path: cifar}",
            "workload.tasks=[{name: new, classes: [7, 8, 9], source: cifar10, path: cifar}]"]
    report = run(load_config(ROOT / "configs" / "sas_mram_repnet.yaml", sets))
    assert report.tables["tasks"] == ["new"]
    assert 0.0 <= report.metrics["accuracy_average"] <= 1.0
    assert report.metrics["energy_train_j"] > 0


def test_cli_names_the_key_of_a_missing_data_path(tmp_path):
    from test_cli import imcsim

    res = imcsim("run", "configs/sas_mram_repnet.yaml", "--out", str(tmp_path / "out"), "--quiet",
                 "--set", "workload.tasks=[{name: a, classes: [1, 2], source: cifar10, path: nowhere/cifar}]")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1
    assert "workload.tasks.0.path" in res.stderr
    assert "no such" in res.stderr
    assert not (tmp_path / "out").exists()


def test_cli_rejects_mixed_channels(tmp_path):
    from test_cli import imcsim

    write_cifar(tmp_path / "cifar")
    res = imcsim("run", str(ROOT / "configs" / "sas_mram_repnet.yaml"), "--out", str(tmp_path / "out"), "--quiet",
                 "--set", f"workload.tasks=[{{name: a, classes: [1, 2], source: cifar10, path: {tmp_path / 'cifar'}}}]",
                 cwd=tmp_path)
    assert res.returncode == 2
    assert "channel" in res.stderr
    assert "workload.tasks.0.source" in res.stderr


def test_cost_only_activity_from_a_functional_report(tmp_path):
    import json

    from imcsim.config import load_config
    from imcsim.errors import InputError

    measured = {"forward_plane_density": [0.1] * 8, "error_plane_density": [0.2] * 8, "weight_bit_density": 0.4,
                "weight_change_fraction": 0.03, "weight_std_lsb": 21.5}
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"tables": {"activity": measured}}))
    config = ROOT / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml"
    act = load_config(config, [f"workload.cost_only.activity={{from_report: {report}}}"]).config.workload.cost_only
    assert act.activity.model_dump(exclude={"from_report", "weight_change_by_layer"}) == measured
    assert act.activity.weight_change_by_layer == {}  # none measured: every layer takes the overall fraction
    # an explicit key wins over the report's
    act = load_config(config, [f"workload.cost_only.activity={{from_report: {report}, weight_bit_density: 0.7}}"])
    assert act.config.workload.cost_only.activity.weight_bit_density == 0.7
    (tmp_path / "bad.json").write_text(json.dumps({"tables": {}}))
    with pytest.raises(InputError, match=r"workload\.cost_only\.activity.*not an imcsim report"):
        load_config(config, [f"workload.cost_only.activity={{from_report: {tmp_path / 'bad.json'}}}"])


def test_measured_activity_of_stored_weights():
    from imcsim.sim.tally import measured_activity

    w = np.array([[1, -1], [3, 0]], dtype=np.int8)  # bits: 1 + 8 + 2 + 0 = 11 of 32
    out = measured_activity([], [w])
    assert out["weight_bit_density"] == pytest.approx(11 / 32, abs=1e-4)
    assert out["weight_std_lsb"] == pytest.approx(float(np.std([1, -1, 3, 0])), abs=0.01)
