"""ONNX importer: exported torch models round-trip, meta runs, weight-free ops, error messages, digests."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from imcsim.models.onnx_import import (  # noqa: E402
    SUPPORTED_OPS,
    OnnxError,
    OnnxModel,
    load_onnx,
    onnx_digest,
)


def export(model: nn.Module, x: torch.Tensor, path: Path, opset: int | None = None) -> Path:
    """Export ``model`` (eval mode) with the legacy TorchScript exporter."""
    model.eval()
    kwargs = {} if opset is None else {"opset_version": opset}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, **kwargs)
    return path


def save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, groups=2)  # bias and groups
        self.bn = nn.BatchNorm2d(8)  # after the ReLU, so the exporter cannot fold it into the conv
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        x = self.bn(torch.relu(self.conv(x)))
        x = F.max_pool2d(x, 2)
        x = F.adaptive_avg_pool2d(self.dw(x), 1)
        return self.fc(torch.flatten(x, 1))


class TinyAttention(nn.Module):
    def __init__(self, d: int = 8):
        super().__init__()
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.norm = nn.LayerNorm(d)
        self.scale = d**-0.5

    def forward(self, x):
        scores = torch.softmax(self.q(x) @ self.k(x).transpose(-2, -1) * self.scale, dim=-1)
        return self.norm(x + F.gelu(self.out(scores @ self.v(x))))


CNN_INPUT = (2, 4, 8, 8)


@pytest.fixture
def cnn_file(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN()
    return model, export(model, torch.randn(CNN_INPUT), tmp_path / "cnn.onnx")


def layer_shapes(model: nn.Module, kind: type) -> list[tuple[int, ...]]:
    return [tuple(m.weight.shape) for m in model.modules() if type(m) is kind]


def test_cnn_round_trip(cnn_file):
    model, path = cnn_file
    imported = load_onnx(path)
    assert isinstance(imported, OnnxModel)
    assert not imported.training
    x = torch.randn(CNN_INPUT)
    with torch.no_grad():
        torch.testing.assert_close(imported(x), model(x), atol=1e-5, rtol=1e-5)
    for kind in (nn.Conv2d, nn.Linear):
        assert layer_shapes(imported, kind) == layer_shapes(model, kind)
    assert [m.groups for m in imported.modules() if isinstance(m, nn.Conv2d)] == [2, 8]
    assert layer_shapes(imported, nn.BatchNorm2d) == [(8,)]
    bn = next(m for m in imported.modules() if isinstance(m, nn.BatchNorm2d))
    torch.testing.assert_close(bn.running_var, model.bn.running_var)
    assert imported.input_shapes == [CNN_INPUT]
    # layers are named after the (sanitised) ONNX node names
    names = dict(imported.named_modules())
    assert "layers._conv_Conv" in names
    assert "layers._fc_Gemm" in names
    assert all(set(key) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") for key in imported.layers)


def test_cnn_on_meta_device(cnn_file):
    _, path = cnn_file
    imported = load_onnx(path).to("meta")
    out = imported(torch.empty(CNN_INPUT, device="meta"))
    assert out.device.type == "meta"
    assert tuple(out.shape) == (2, 5)


def test_attention_round_trip(tmp_path):
    torch.manual_seed(1)
    model = TinyAttention()
    x = torch.randn(2, 5, 8)
    imported = load_onnx(export(model, x, tmp_path / "attn.onnx"))
    with torch.no_grad():
        torch.testing.assert_close(imported(x), model(x), atol=1e-5, rtol=1e-5)
    # four weight matrices become Linear layers; the two activation products stay torch.matmul steps
    assert len(layer_shapes(imported, nn.Linear)) == 4
    assert len(layer_shapes(imported, nn.LayerNorm)) == 1
    matmuls = [s for s in imported._steps if s.fn is torch.matmul]
    assert len(matmuls) == 2
    meta_out = imported.to("meta")(torch.empty(2, 5, 8, device="meta"))
    assert tuple(meta_out.shape) == (2, 5, 8)


class OpsZoo(nn.Module):
    """Weight-free ops that the exporter emits as Clip, HardSigmoid, HardSwish, Pow, Sqrt, ReduceMean, ..."""

    def forward(self, x):  # x: (2, 4, 6, 6)
        a = F.relu6(x) + torch.sigmoid(x) * torch.tanh(x) - F.hardsigmoid(x) / (2.0 + torch.sigmoid(x))
        a = a + F.hardswish(x) + torch.sqrt(x * x + 1.0) - torch.erf(x) ** 2
        pooled = F.avg_pool2d(a, 3, stride=2, padding=1, count_include_pad=False) + F.max_pool2d(a, 2)  # (2, 4, 3, 3)
        m = pooled - pooled.mean(dim=(2, 3), keepdim=True)
        flat = m.reshape(2, 4, 9).transpose(1, 2)  # (2, 9, 4)
        both = torch.cat([flat, flat[:, 1:4, :]], dim=1)  # (2, 12, 4)
        s = torch.softmax(both, dim=-1).unsqueeze(1).squeeze(1)
        return s[:, 0] + s.mean(dim=1)  # Gather with a constant index


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_weight_free_ops_round_trip(tmp_path, opset):
    x = 4.0 * torch.randn(2, 4, 6, 6)  # wide enough to reach both ends of relu6
    model = OpsZoo()
    path = export(model, x, tmp_path / f"ops{opset}.onnx", opset=opset)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Clip", "HardSigmoid", "Pow", "ReduceMean", "Concat", "Slice", "AveragePool", "Softmax"} <= ops
    imported = load_onnx(path)
    torch.testing.assert_close(imported(x), model(x), atol=1e-5, rtol=1e-5)
    assert tuple(imported.to("meta")(x.to("meta")).shape) == (2, 4)


def test_embedding_gather(tmp_path):
    torch.manual_seed(2)

    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.head = nn.Linear(6, 3)

        def forward(self, ids):
            return self.head(self.emb(ids).mean(dim=1))

    model = Embed()
    ids = torch.randint(0, 10, (2, 7))
    imported = load_onnx(export(model, ids, tmp_path / "emb.onnx"))
    torch.testing.assert_close(imported(ids), model(ids), atol=1e-5, rtol=1e-5)
    assert layer_shapes(imported, nn.Embedding) == [(10, 6)]


# ---- errors


def test_random_bytes_is_an_error(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8).tobytes())
    with pytest.raises(OnnxError, match=r"garbage\.onnx: "):
        load_onnx(path)


def test_truncated_file_is_an_error(cnn_file, tmp_path):
    _, path = cnn_file
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(OnnxError, match=r"cut\.onnx: "):
        load_onnx(cut)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(OnnxError, match=r"empty\.onnx: empty file"):
        load_onnx(path)


def test_missing_path_and_directory_are_errors(tmp_path):
    with pytest.raises(OnnxError, match=r"nowhere\.onnx: no such file"):
        load_onnx(tmp_path / "nowhere.onnx")
    with pytest.raises(OnnxError, match="is a directory"):
        load_onnx(tmp_path)


def test_oversized_file_is_an_error(cnn_file):
    _, path = cnn_file
    with pytest.raises(OnnxError, match=r"cnn\.onnx: .*more than max_bytes=100"):
        load_onnx(path, max_bytes=100)


def test_unsupported_op_names_the_node(tmp_path):
    boxes = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 6, 4])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 6])
    picked = helper.make_tensor_value_info("picked", TensorProto.INT64, [None, 3])
    nodes = [
        helper.make_node("Relu", ["scores"], ["s"], name="act"),
        helper.make_node("NonMaxSuppression", ["boxes", "s"], ["picked"], name="nms/1"),
    ]
    path = save(helper.make_graph(nodes, "g", [boxes, scores], [picked]), tmp_path / "nms.onnx")
    with pytest.raises(OnnxError) as info:
        load_onnx(path)
    message = str(info.value)
    assert "nms.onnx" in message
    assert "'nms/1'" in message
    assert "NonMaxSuppression" in message
    assert "not supported" in message
    assert "\n" not in message


def test_graph_without_nodes_is_an_error(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    path = save(helper.make_graph([], "g", [x], [x]), tmp_path / "hollow.onnx")
    with pytest.raises(OnnxError, match=r"hollow\.onnx: .*no graph nodes"):
        load_onnx(path)


def test_checker_failure_is_an_error(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    node = helper.make_node("Relu", ["undefined"], ["y"], name="r")
    path = save(helper.make_graph([node], "g", [x], [y]), tmp_path / "broken.onnx")
    with pytest.raises(OnnxError, match=r"broken\.onnx: the ONNX checker rejects"):
        load_onnx(path)


def test_asymmetric_conv_pads_name_the_node(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    w = numpy_helper.from_array(np.ones((3, 2, 2, 2), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="stem.conv", pads=[0, 0, 1, 1])
    path = save(helper.make_graph([node], "g", [x], [y], [w]), tmp_path / "pads.onnx")
    with pytest.raises(OnnxError, match=r"pads\.onnx: node 'stem\.conv' \(op Conv\): asymmetric pads"):
        load_onnx(path)


def linear_graph(weight: TensorProto, bias: TensorProto | None = None) -> onnx.GraphProto:
    """y = x @ W + b with an unnamed MatMul node; ``weight`` is the initializer W of shape (3, 2)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    b = bias if bias is not None else numpy_helper.from_array(np.array([1.0, -1.0], np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])]
    return helper.make_graph(nodes, "g", [x], [y], [weight, b])


def external_weight(location: str, name: str = "W", dims: tuple[int, ...] = (3, 2)) -> TensorProto:
    w = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(dims))
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value=location)
    return w


@pytest.mark.parametrize(
    "weight",
    [external_weight("absent.bin"), TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[3, 2])],
    ids=["external-missing", "no-data"],
)
def test_missing_weights(tmp_path, weight):
    path = save(linear_graph(weight), tmp_path / "hollow_weights.onnx")
    with pytest.raises(OnnxError, match=r"hollow_weights\.onnx: holds no weights for initializer 'W'.*functional runs need them"):
        load_onnx(path)
    model = load_onnx(path, weights=False)
    assert model.input_shapes == [(None, 3)]
    assert list(model.layers) == ["MatMul_0"]
    assert layer_shapes(model, nn.Linear) == [(2, 3)]
    assert tuple(model(torch.randn(4, 3)).shape) == (4, 2)


def test_missing_bias_of_a_weight_free_add(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(3, 2)
    graph = linear_graph(numpy_helper.from_array(values, "W"), external_weight("gone.bin", "b", (2,)))
    path = save(graph, tmp_path / "no_bias.onnx")
    with pytest.raises(OnnxError, match=r"no_bias\.onnx: holds no weights for initializer 'b'"):
        load_onnx(path)
    model = load_onnx(path, weights=False)  # the bias reads as zeros; the layer keeps torch's initialisation
    x = torch.randn(4, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.layers["MatMul_0"](x))


def test_external_weights_are_read(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(3, 2)
    model = helper.make_model(
        linear_graph(numpy_helper.from_array(values, "W")), opset_imports=[helper.make_opsetid("", 17)]
    )
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="ext.bin", size_threshold=0)
    assert (tmp_path / "ext.bin").is_file()
    imported = load_onnx(path)
    x = torch.randn(4, 3)
    torch.testing.assert_close(imported(x), x @ torch.from_numpy(values) + torch.tensor([1.0, -1.0]))


def test_supported_ops_constant():
    for op in ("Conv", "Gemm", "MatMul", "BatchNormalization", "LayerNormalization", "Gather", "Softmax", "Reshape"):
        assert op in SUPPORTED_OPS
    assert "LSTM" not in SUPPORTED_OPS


def test_digest_changes_with_one_byte(cnn_file):
    _, path = cnn_file
    data = bytearray(path.read_bytes())
    before = onnx_digest(path)
    assert before == hashlib.sha256(data).hexdigest()
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert onnx_digest(path) != before
