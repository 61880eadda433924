"""Training methods as plug-ins: one module per method, each registering itself in
:data:`imcsim.registry.METHODS` with a one-line description (``imcsim list methods``).

The interface is :class:`imcsim.methods.base.Method`; the task-sequence trainer
(:mod:`imcsim.workloads.trainer`) runs any registered method, a plug-in's too (entry-point group
``imcsim.methods``).
"""

from importlib import import_module

from imcsim.methods.base import Method

BUILTIN = ("repnet", "repnet_bias", "last_layer", "bias_only", "tinytl", "attention_adaptor", "gradient_filter",
           "mobiletl", "lora", "lorafusion", "full")
"""The built-in methods' modules, imported in this order: the order they register in, and so the order card
errors and ``imcsim list methods`` show them (each workload's own methods, then ``full``)."""

for _name in BUILTIN:
    import_module(f"imcsim.methods.{_name}")

__all__ = ["BUILTIN", "Method"]
