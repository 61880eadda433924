"""Mapping a plain torch model onto the hardware: GEMM layers to the array, the rest to the digital unit.

:func:`map_to_array` walks a model and replaces every layer that carries a GEMM
with a weight by its IMC equivalent, named by its module path (with an optional
prefix), sharing the weight and bias tensors:

* ``nn.Conv2d`` (any kernel, stride, zero padding, dilation and groups, depthwise
  included) -> :class:`~imcsim.workloads.int8.IMCConv2d` (im2col, one GEMM per group);
* ``nn.Linear`` -> :class:`~imcsim.workloads.int8.IMCLinear`.

Layers whose parameters are not GEMM weights stay where they are and run in the
digital unit: batch, layer and group norms (and RMS norms), embeddings (table
lookups), PReLU. Layers without parameters (activations, pooling, flatten,
upsampling, dropout, identity) are weight-free digital work. Products of two
activations (attention scores and context) are found by the dataflow tracer
and counted in the digital unit (:mod:`imcsim.workloads.dataflow`).

Anything else that holds parameters (1-D or 3-D and transposed convolutions,
recurrent layers, ``nn.MultiheadAttention`` whose projections are not
``nn.Linear`` modules, bilinear layers) cannot be mapped: :class:`MappingError`
names the layer and its type. A model that maps no layer to the array is an
error too, never an empty run. Parameters a custom module holds directly
(a class token, a position embedding) are elementwise digital parameters; a
custom module that multiplies by such a parameter is refused by the tracer.
"""

from __future__ import annotations

from torch import nn

from imcsim.workloads.int8 import IMCConv2d, IMCLinear, IMCModule

DIGITAL_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.Embedding, nn.PReLU,
    nn.InstanceNorm2d, *([nn.RMSNorm] if hasattr(nn, "RMSNorm") else []),
)
"""Layers whose parameters are elementwise or lookup parameters: they run in the digital unit."""

ARRAY_LAYERS = ("Conv2d", "Linear")


class MappingError(ValueError):
    """A model imcsim cannot map onto the hardware (the message names the layer)."""


def _own_parameters(module: nn.Module) -> list[str]:
    return [name for name, _ in module.named_parameters(recurse=False)]


def _is_composite(module: nn.Module) -> bool:
    """A container or custom module: its children are mapped on their own."""
    return type(module).__module__.split(".")[0] != "torch" or isinstance(
        module, nn.Sequential | nn.ModuleList | nn.ModuleDict)


def map_to_array(model: nn.Module, prefix: str = "") -> nn.Module:
    """Replace ``model``'s plain conv and linear layers by IMC layers named ``prefix`` + module path, in place.

    Returns the model (the root itself is replaced when it is a bare layer). IMC layers already in the
    model keep their names. Raises :class:`MappingError` for a layer that cannot be mapped.
    """
    if isinstance(model, nn.Conv2d | nn.Linear):
        return _mapped(model, prefix.rstrip(".") or "layer")
    for path, module in list(model.named_modules()):
        if not path or isinstance(module, IMCModule):
            continue
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if isinstance(parent, IMCModule):  # an IMC layer's inner modules are its own business
            continue
        if isinstance(module, nn.Conv2d | nn.Linear):
            setattr(parent, attr, _mapped(module, f"{prefix}{path}"))
        elif isinstance(module, DIGITAL_LAYERS) or not _own_parameters(module) or _is_composite(module):
            continue
        else:
            raise MappingError(f"layer {path!r} ({type(module).__name__}) has weights imcsim does not map; "
                               f"mappable: {', '.join(ARRAY_LAYERS)} to the array, norms and embeddings to the "
                               "digital unit")
    return model


def _mapped(module: nn.Module, name: str) -> IMCModule:
    if isinstance(module, nn.Linear):
        return IMCLinear.from_torch(module, name)
    try:
        return IMCConv2d.from_torch(module, name)
    except ValueError as err:
        raise MappingError(str(err)) from None


def array_modules(model: nn.Module) -> list[IMCModule]:
    """The model's layers stored in the array; :class:`MappingError` when there is none."""
    found = [m for m in model.modules() if isinstance(m, IMCModule)]
    if not found:
        raise MappingError("the model maps no layer to the array (it has no nn.Conv2d or nn.Linear layer); "
                           "an empty run would count nothing")
    return found
