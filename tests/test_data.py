"""Local data sources: CIFAR-10 python batches and image folders, made tiny by the tests."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imcsim.workloads import data as data_module
from imcsim.workloads.data import DataError, load_cifar10, load_image_folder, make_task

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


class _Runs:
    """Pickles as a call of ``func(*args)``: what a malicious "batch" makes ``pickle.load`` run."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _marker_makers(marker: Path) -> dict[str, _Runs]:
    return {
        "os.system": _Runs(os.system, f'echo x > "{marker}"'),
        "builtins.exec": _Runs(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.eval": _Runs(builtins.eval, f"open({str(marker)!r}, 'w')"),
    }


def _dump(path: Path, obj, protocol: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def _batch(n: int = 4, labels=None, data=None) -> dict:
    return {b"data": np.zeros((n, 3072), np.uint8) if data is None else data,
            b"labels": list(range(n)) if labels is None else labels}


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("labels", ["ints", "numpy ints", "array"])
def test_cifar_format_files_load_under_every_protocol(tmp_path, protocol, labels):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, 5)
    x = rng.integers(0, 256, (5, 3072), dtype=np.uint8)
    lab = {"ints": y.tolist(), "numpy ints": list(y), "array": y.astype(np.uint8)}[labels]
    # str keys, as a Python 3 pickle of a batch has them, and the extras a real batch carries
    batch = {"data": x, "labels": lab, "batch_label": b"testing batch 1 of 1", "filenames": [b"a.png"] * 5}
    got_x, got_y = load_cifar10(str(_dump(tmp_path / "test_batch", batch, protocol)))
    assert np.array_equal(got_y, y)
    assert np.allclose(got_x.reshape(5, -1), x / 255.0)


class _Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes, as the real CIFAR-10 files (pickled by Python 2) hold them."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def test_cifar_python2_batch_loads(tmp_path):
    x = np.random.default_rng(4).integers(0, 256, (3, 3072), dtype=np.uint8)
    buf = io.BytesIO()
    _Python2Pickler(buf, protocol=2).dump({b"data": x, b"labels": [7, 0, 9], b"batch_label": b"training batch 1"})
    # numpy 1 (and the numpy of Python 2) names its reconstructor here
    blob = buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n_reconstruct" in blob
    assert b"_codecs" not in blob
    (tmp_path / "data_batch_1").write_bytes(blob)
    got_x, got_y = load_cifar10(str(tmp_path / "data_batch_1"))
    assert got_y.tolist() == [7, 0, 9]
    assert np.allclose(got_x.reshape(3, -1), x / 255.0)


@pytest.mark.parametrize("how", ["os.system", "builtins.exec", "builtins.eval"])
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_cifar_pickle_naming_code_is_refused_unrun(tmp_path, how, protocol):
    marker = tmp_path / "ran"
    batch = _dump(tmp_path / "cifar" / "data_batch_1", _batch(labels=_marker_makers(marker)[how]), protocol)
    with pytest.raises(DataError, match="refused") as err:
        load_cifar10(str(tmp_path / "cifar"))
    assert str(batch) in str(err.value)
    assert how.split(".")[1] in str(err.value)  # the global it named
    assert not marker.exists()


class _ArrayState:
    """Pickles as an ndarray whose state claims ``shape`` but holds no data (numpy would allocate it first)."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, np.dtype(dtype)

    def __reduce__(self):
        empty = np.zeros(0).__reduce__()
        return empty[0], empty[1], (1, self.shape, self.dtype, False, [] if self.dtype.hasobject else b"")


@pytest.mark.parametrize(("obj", "message"), [
    (_Runs(bytearray, 10**12), "refused bytearray"),  # an admitted type asked to allocate a terabyte
    (_Runs(np.ndarray, (10**5, 10**5), "O"), "numpy.ndarray"),  # arrays come only from their pickled state
    (_ArrayState((10**5, 10**5), "O"), "whose data does not fit"),
    (_ArrayState((10**6, 3072), "u1"), "whose data does not fit"),
    (_Runs(np.load, "x.npy"), "numpy.load"),  # no other numpy function
    (_Runs(getattr, 0, "real"), "getattr"),
    (_Runs(np.dtype, "u1"), "'data' is a UInt8DType"),  # admitted, but not a batch's data
])
def test_cifar_pickle_only_builds_data(tmp_path, obj, message):
    path = _dump(tmp_path / "test_batch", {b"data": obj, b"labels": []})
    with pytest.raises(DataError, match=message) as err:
        load_cifar10(str(path))
    assert str(err.value).startswith(f"{path}: ")


@pytest.mark.parametrize(("batch", "message"), [
    ([1, 2], "not a CIFAR-10 python batch"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, "no 'data' or no 'labels'"),
    (_batch(data=np.zeros((4, 3072), np.float32)), "'data' is a float32 array"),
    (_batch(data=np.zeros((4, 3072), object)), "'data' is a object array"),
    (_batch(data=np.zeros((4, 3072), np.int64)), "'data' is a int64 array"),
    (_batch(data=np.zeros((4, 100), np.uint8)), r"shape \(4, 100\)"),
    (_batch(data=np.zeros((4, 3, 32, 32), np.uint8)), "N x 3072"),
    (_batch(data=[[0] * 3072] * 4), "'data' is a list"),
    (_batch(labels=[0, 1, 2]), "4 images in 'data' but 3 'labels'"),
    (_batch(labels=[0, 1, 2.0, 3]), "label 2.0 at position 2 is not an integer"),
    (_batch(labels=[0, True, 2, 3]), "label True at position 1 is not an integer"),
    (_batch(labels=np.zeros(4, np.float64)), "'labels' is a float64 array"),
    (_batch(labels="0123"), "'labels' is a str"),
])
def test_cifar_structure_is_checked_strictly(tmp_path, batch, message):
    path = _dump(tmp_path / "data_batch_1", batch)
    with pytest.raises(DataError, match=message) as err:
        load_cifar10(str(path))
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("labels", "shown"), [
    ([0, 1, 10**30, 3], f"label {10**30} at position 2"),  # overflowed int64 before
    ([0, -1, 2, 3], "label -1 at position 1"),
    ([0, 1, 2, 10], "label 10 at position 3"),
    (np.array([0, 1, 2, 10], np.int64), "label 10 at position 3"),
    ([10**100] * 4, "label 1000000000000000000000000000000000000... at position 0"),
    ([10**5000] * 4, "label <int of 16610 bits> at position 0"),
])
def test_cifar_labels_out_of_range_name_the_value(tmp_path, labels, shown):
    path = _dump(tmp_path / "data_batch_1", _batch(labels=labels))
    with pytest.raises(DataError) as err:
        load_cifar10(str(path))
    assert str(err.value).startswith(f"{path}: {shown} is not a CIFAR-10 class")
    assert len(str(err.value)) < len(str(path)) + 120


def test_cifar_truncated_batch_names_the_file(tmp_path):
    blob = pickle.dumps(_batch(), protocol=2)
    path = tmp_path / "data_batch_1"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR-10 python batch \(\w+"):
        load_cifar10(str(path))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="measures memory through /proc")
@pytest.mark.parametrize("opcode", [b"\x96", b"\x8e", b"\x8d"])  # BYTEARRAY8, BINBYTES8, BINUNICODE8
def test_cifar_length_claims_beyond_the_file_allocate_nothing(tmp_path, opcode):
    """A few bytes claiming an exabyte string: refused from the opcodes, before the unpickler allocates."""
    import resource

    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x05" + opcode + struct.pack("<Q", 2**62) + b"abc")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    in_use = int(next(ln for ln in Path("/proc/self/status").read_text().splitlines()
                      if ln.startswith("VmSize:")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (in_use + 4 * 2**30, hard))  # allocating the claim would fail loudly
    try:
        with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR-10 python batch .*remain"):
            load_cifar10(str(path))
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _png_declaring(width: int, height: int) -> bytes:
    """A 1 x 1 PNG whose header claims ``width`` x ``height`` pixels (read by PIL without decoding)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    assert png[12:16] == b"IHDR"
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def _noise_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("content", "message"), [
    (_png_declaring(100000, 100000), "refused: too many pixels"),  # PIL's DecompressionBombError
    (_png_declaring(9000, 9000), "refused: the image declares 9000 x 9000 pixels"),  # our cap, below PIL's
    (b"just some text", "not a readable image"),
    (_noise_png()[:1500], "not a readable image"),  # truncated
    (_noise_png()[:300] + bytes(200) + _noise_png()[500:], "not a readable image"),  # corrupt
])
def test_bad_images_name_the_file(tmp_path, content, message):
    write_image_folder(tmp_path / "imgs")
    bad = tmp_path / "imgs" / "dog" / "9.png"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        load_image_folder(str(tmp_path / "imgs"), 8)
    assert str(err.value).startswith(f"{bad}: ")


def test_decompression_bomb_warning_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "MAX_IMAGE_PIXELS", 10**12)  # only PIL's limits apply
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    bad = tmp_path / "imgs" / "a" / "x.png"
    bad.write_bytes(_png_declaring(10000, 10000))  # above Image.MAX_IMAGE_PIXELS, below twice it: a warning
    assert Image.MAX_IMAGE_PIXELS < 10000 * 10000 < 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(DataError, match="too many pixels") as err:
        load_image_folder(str(tmp_path / "imgs"), 8)
    assert str(err.value).startswith(f"{bad}: ")


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
    assert act.activity.model_dump(exclude={"from_report", "weight_change_by_layer", "by_method"}) == measured
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


def _run_in_process(capsys, *args: str) -> tuple[int, str]:
    from imcsim.cli import main

    code = main(["run", *args, "--quiet"])
    err = capsys.readouterr().err
    return code, err


def test_cli_malicious_cifar_pickle_is_one_line_input_error(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "ran"
    batch = _dump(tmp_path / "cifar" / "data_batch_1", _batch(labels=_marker_makers(marker)["os.system"]))
    (tmp_path / "bad_data.yaml").write_text(
        "schema_version: 1\nname: bad_data\ndevice: {card: sas_mram_4mtj_zhang_tcad2024}\n"
        "circuit: {card: bitserial_macro_28nm}\nworkload:\n  card: repnet_digits_tiny\n"
        f"  tasks: [{{name: a, classes: [1, 2], source: cifar10, path: '{tmp_path / 'cifar'}'}}]\n")
    monkeypatch.chdir(tmp_path)
    code, err = _run_in_process(capsys, "bad_data.yaml", "--library", str(ROOT), "--out", str(tmp_path / "out"))
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith(f"imcsim: error: bad_data.yaml: workload.tasks.0.path: {batch}: refused: ")
    assert "system" in err
    assert "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_cli_out_of_range_cifar_label_is_one_line_input_error(tmp_path, capsys):
    batch = _dump(tmp_path / "cifar" / "data_batch_1", _batch(labels=[0, 1, 10**30, 3]))
    code, err = _run_in_process(
        capsys, str(ROOT / "configs" / "sas_mram_repnet.yaml"), "--out", str(tmp_path / "out"),
        "--set", f"workload.tasks=[{{name: a, classes: [1, 2], source: cifar10, path: {tmp_path / 'cifar'}}}]")
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith(f"imcsim: error: --set: workload.tasks.0.path: {batch}: label {10**30} at position 2 ")
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
