"""Built-in classifier heads: an MLP, a linear SVM and an ensemble of heads.

Each maps the fused vector to one logits tensor per taxonomy level. The torch modules
live in ``plugins.head_modules``, imported only when a module or loss is built.
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar

from prodcat import Head, Register, create_component, hookimpl


class MlpHead(Head):
    """Shared hidden layers (``hidden`` widths, ReLU, ``dropout``), one Linear per level.

    Trained with cross-entropy summed over levels (the base ``Head.loss``).
    ``input_norm`` adds a LayerNorm over the fused vector first.
    """

    name: ClassVar[str] = "head.mlp"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = "multi-layer perceptron, one output layer per level"
    defaults: ClassVar[dict[str, Any]] = {"hidden": [512], "dropout": 0.2, "input_norm": True}

    def build_module(self, input_dim: int, level_sizes: list[int]) -> Any:
        from prodcat.plugins.head_modules import MlpModule

        return MlpModule(
            input_dim,
            level_sizes,
            self.config["hidden"],
            self.config["dropout"],
            self.config["input_norm"],
        )


class LinearSvmHead(Head):
    """One linear classifier per level trained with the multi-class hinge loss.

    Outputs are margins, not calibrated logits; weight decay (the SVM's regulariser) comes
    from the optimiser. Targets of -1 are ignored.
    """

    name: ClassVar[str] = "head.linear_svm"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = "linear classifier per level, multi-class hinge loss"
    defaults: ClassVar[dict[str, Any]] = {"margin": 1.0, "dropout": 0.0, "input_norm": True}

    def build_module(self, input_dim: int, level_sizes: list[int]) -> Any:
        from prodcat.plugins.head_modules import MlpModule

        return MlpModule(
            input_dim, level_sizes, [], self.config["dropout"], self.config["input_norm"]
        )

    def loss(self, outputs: Any, targets: Any) -> Any:
        from prodcat.plugins.head_modules import hinge_loss

        return hinge_loss(outputs, targets, self.config["margin"])


class EnsembleHead(Head):
    """Several heads side by side on the same fused vector, their probabilities averaged.

    ``members``: a list of ``{"name": head name, "config": {...}}``, built through the
    plugin manager (so any registered head, third-party ones included, can be a member).
    The output per level is the log of the members' mean softmax probability (see
    ``EnsembleModule``); the loss is the sum of each member's own loss on its own outputs,
    so each member trains as it would alone. ``loss`` must follow the forward that
    produced ``outputs`` (the usual forward-then-loss step): it finds the members'
    outputs kept by that forward, which lets the caller rebuild the returned tuple.
    """

    name: ClassVar[str] = "head.ensemble"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = "several heads, class probabilities averaged"
    defaults: ClassVar[dict[str, Any]] = {
        "members": [{"name": "head.mlp", "config": {}}, {"name": "head.linear_svm", "config": {}}]
    }

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        specs = self.config["members"]
        if not specs or not all(isinstance(spec, dict) and "name" in spec for spec in specs):
            raise ValueError(
                'head.ensemble: members must be a non-empty list of {"name": ..., "config": {...}}'
            )
        self.members: list[Head] = [
            create_component("head", spec["name"], spec.get("config") or {}) for spec in specs
        ]
        # Record each member's full config, defaults included, in the manifest.
        self.config["members"] = [
            {"name": member.name, "config": member.config} for member in self.members
        ]
        self._modules: weakref.WeakSet[Any] = weakref.WeakSet()

    def build_module(self, input_dim: int, level_sizes: list[int]) -> Any:
        from prodcat.plugins.head_modules import EnsembleModule

        module = EnsembleModule(
            [member.build_module(input_dim, level_sizes) for member in self.members]
        )
        self._modules.add(module)
        return module

    def loss(self, outputs: Any, targets: Any) -> Any:
        levels = tuple(outputs)
        for module in self._modules:
            last = getattr(module, "last_outputs", ())
            if len(last) == len(levels) and all(a is b for a, b in zip(last, levels, strict=True)):
                return sum(
                    member.loss(member_outputs, targets)
                    for member, member_outputs in zip(
                        self.members, module.last_member_outputs, strict=True
                    )
                )
        raise ValueError(
            "head.ensemble: loss() got outputs that are not those of the latest forward of a "
            "module this head built; call loss right after the forward that produced them"
        )


@hookimpl
def register_heads(register: Register) -> None:
    register(MlpHead)
    register(LinearSvmHead)
    register(EnsembleHead)
