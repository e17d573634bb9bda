"""The demo's training loop: one model per loss, trained side by side, fair and reproducible.

Fairness: every loss starts from a copy of the same initial weights (one seeded
:func:`~crossentropy.demo.models.make_model`), and is trained with the same optimizer (plain
SGD: the step is the gradient times the learning rate, so a vanishing gradient is a
vanishing step, not hidden by momentum or Adam's rescaling), the same learning rate and the
same batches in the same order: epoch ``e``'s order is a permutation drawn from a generator
seeded with ``(seed, e)`` alone, which also makes it independent of where a run was resumed.

Reproducibility: :func:`deterministic` runs PyTorch with deterministic algorithms and a fixed
number of threads (a reduction split over a different number of threads rounds differently),
so the same settings give the same numbers bit for bit, and a run resumed from a checkpoint
(:meth:`Trainer.state_dict`) ends with the same numbers as one never interrupted.

Each epoch is recorded (:class:`EpochRecord`) after it ends, from the model evaluated on the
whole training and validation sets; epoch 0 is the initial model, identical for every loss.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .data import DATASETS, Dataset, load_dataset
from .models import MODELS, make_model
from .objectives import LOSSES, cross_entropy_of, objective, predictions

__all__ = [
    "FIELDS",
    "MAX_BATCH_SIZE",
    "MAX_EPOCHS",
    "MAX_LR",
    "MAX_SEED",
    "DemoConfig",
    "EpochRecord",
    "Trainer",
    "batch_order",
    "deterministic",
]


MAX_EPOCHS = 100_000
"""The most epochs a run trains."""

MAX_BATCH_SIZE = 1 << 20
"""The largest batch (a batch larger than the training set is the whole set)."""

MAX_SEED = 2**64 - 1
"""The largest seed: PyTorch's generators take 64 bits."""

MAX_LR = 1e6
"""The largest learning rate (far beyond any that trains; float32 holds it)."""


@dataclass(frozen=True)
class DemoConfig:
    """The settings of a demo run; invalid values raise :class:`ValueError` naming the option.

    Example:
        >>> DemoConfig(losses=("ce", "mse", "ce-smooth")).losses
        ('ce', 'mse', 'ce-smooth')
        >>> DemoConfig(lr=0)
        Traceback (most recent call last):
        ...
        ValueError: lr: expected a number in (0, 1e+06]; got 0
    """

    dataset: str = "digits"
    model: str = "mlp"
    losses: tuple[str, ...] = ("ce", "mse")
    epochs: int = 30
    lr: float = 0.05
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(
                f"dataset: expected one of {', '.join(DATASETS)}; got {self.dataset!r}"
            )
        if self.model not in MODELS:
            raise ValueError(f"model: expected one of {', '.join(MODELS)}; got {self.model!r}")
        if not self.losses:
            raise ValueError(f"losses: expected at least one of {', '.join(LOSSES)}; got none")
        for loss in self.losses:
            if loss not in LOSSES:
                raise ValueError(f"losses: expected names from {', '.join(LOSSES)}; got {loss!r}")
        if len(set(self.losses)) != len(self.losses):
            raise ValueError(f"losses: expected each loss once; got {','.join(self.losses)}")
        for name, low, high in (
            ("epochs", 1, MAX_EPOCHS),
            ("batch_size", 1, MAX_BATCH_SIZE),
            ("seed", 0, MAX_SEED),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name}: expected an integer in [{low}, {high}]; got {value!r}")
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr <= MAX_LR:
            raise ValueError(f"lr: expected a number in (0, {MAX_LR:g}]; got {lr!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-compatible values."""
        values = asdict(self)
        values["losses"] = list(self.losses)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DemoConfig:
        """The inverse of :meth:`to_dict`."""
        return cls(**{**values, "losses": tuple(values["losses"])})


@dataclass(frozen=True)
class EpochRecord:
    """The metrics of one loss's model after one epoch (epoch 0: the initial model).

    Attributes:
        epoch: the epoch just completed (0 before training).
        loss: the loss's command-line name.
        train_loss, val_loss: the run's own objective on the training / validation set.
        train_accuracy, val_accuracy: the share of rows classified correctly.
        val_cross_entropy: the mean cross entropy on the validation set, whatever the loss
            trained with (the yardstick that compares them).
        output_grad_norm: the mean over the epoch's training examples of ‖∂ℓᵢ/∂zᵢ‖₂, the
            norm of each example's loss gradient at the model's output (its logits zᵢ),
            taken at the step that trained on it; for epoch 0, at the initial weights.
    """

    epoch: int
    loss: str
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_cross_entropy: float
    output_grad_norm: float


#: The columns of an :class:`EpochRecord`, in order (the CSV's header).
FIELDS = tuple(field.name for field in fields(EpochRecord))


@contextmanager
def deterministic(threads: int = 1) -> Iterator[None]:
    """Run the block with deterministic PyTorch algorithms on ``threads`` threads.

    The previous settings are restored afterwards.
    """
    was_enabled = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_threads = torch.get_num_threads()
    _use_deterministic_algorithms(True, warn_only=False)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(was_threads)
        _use_deterministic_algorithms(was_enabled, warn_only=was_warn_only)


def _use_deterministic_algorithms(mode: bool, *, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms`` for eager code.

    The public function also sets Inductor's deterministic flag, which imports TorchDynamo and
    Inductor: seconds of start-up, for a compiler the demo never uses. Where PyTorch has the
    eager switch alone (``torch._C._set_deterministic_algorithms``, what the public function
    calls after that import), only it is set.
    """
    eager = getattr(torch._C, "_set_deterministic_algorithms", None)
    if eager is None:  # pragma: no cover - a PyTorch without the private switch
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        eager(mode, warn_only=warn_only)


def batch_order(seed: int, epoch: int, n: int) -> Tensor:
    """The order of the ``n`` training rows in ``epoch``: a function of ``(seed, epoch)`` only.

    Example:
        >>> torch.equal(batch_order(0, 3, 10), batch_order(0, 3, 10))
        True
        >>> sorted(batch_order(0, 3, 10).tolist()) == list(range(10))
        True
    """
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(n, generator=generator)


def _accuracy(logits: Tensor, target: Tensor, *, binary: bool) -> float:
    return float((predictions(logits, binary=binary) == target).to(torch.float64).mean())


def _example_norms(grad: Tensor) -> Tensor:
    """Each example's output gradient norm, from the gradient of a batch *mean* loss."""
    rows = grad.shape[0]
    norms: Tensor = (grad.to(torch.float64) * rows).reshape(rows, -1).norm(dim=1)
    return norms


def _sgd_step(model: nn.Module, lr: float) -> None:
    """Plain SGD, p <- p - lr * grad (what ``torch.optim.SGD`` does without momentum or
    weight decay; written out because importing ``torch.optim`` imports TorchDynamo, seconds
    of start-up for a one-line update)."""
    with torch.no_grad():
        for param in model.parameters():
            if param.grad is not None:
                param.add_(param.grad, alpha=-lr)


class Trainer:
    """One model per loss, all from the same initial weights, each trained by plain SGD.

    Args:
        config: the run's settings.
        data: the data set (loaded from ``config.dataset`` when not given).

    Example:
        >>> trainer = Trainer(DemoConfig(epochs=1, losses=("ce", "mse")))
        >>> with deterministic():
        ...     start = trainer.start()
        ...     first = trainer.train_epoch()
        >>> [(r.epoch, r.loss) for r in start + first]
        [(0, 'ce'), (0, 'mse'), (1, 'ce'), (1, 'mse')]
        >>> start[0].val_accuracy == start[1].val_accuracy  # the same initial weights
        True
    """

    def __init__(self, config: DemoConfig, data: Dataset | None = None) -> None:
        self.config = config
        self.data = data if data is not None else load_dataset(config.dataset)
        if self.data.name != config.dataset:
            raise ValueError(
                f"data: expected the {config.dataset!r} data set; got {self.data.name!r}"
            )
        outputs = 1 if self.data.binary else self.data.n_classes
        initial = make_model(config.model, self.data.n_features, outputs, seed=config.seed)
        self.models: dict[str, nn.Module] = {loss: copy.deepcopy(initial) for loss in config.losses}
        self.history: list[EpochRecord] = []
        #: The last completed epoch (0 once :meth:`start` has evaluated the initial models).
        self.epoch = -1

    @property
    def batches_per_epoch(self) -> int:
        """The number of optimizer steps in one epoch, for each loss."""
        return -(-self.data.x_train.shape[0] // self.config.batch_size)

    def _record(self, loss: str, epoch: int, grad_norm: float) -> EpochRecord:
        data, binary = self.data, self.data.binary
        model = self.models[loss]
        with torch.no_grad():
            z_train, z_val = model(data.x_train), model(data.x_val)
            return EpochRecord(
                epoch=epoch,
                loss=loss,
                train_loss=float(objective(loss, z_train, data.y_train, binary=binary)),
                train_accuracy=_accuracy(z_train, data.y_train, binary=binary),
                val_loss=float(objective(loss, z_val, data.y_val, binary=binary)),
                val_accuracy=_accuracy(z_val, data.y_val, binary=binary),
                val_cross_entropy=float(cross_entropy_of(z_val, data.y_val, binary=binary)),
                output_grad_norm=grad_norm,
            )

    def start(self) -> list[EpochRecord]:
        """Evaluate the initial models (epoch 0), with the output gradient at the start."""
        if self.epoch != -1:
            raise ValueError(f"start: the run is already at epoch {self.epoch}")
        data = self.data
        records = []
        for loss, model in self.models.items():
            logits = model(data.x_train)
            value = objective(loss, logits, data.y_train, binary=data.binary)
            (grad,) = torch.autograd.grad(value, logits)
            records.append(self._record(loss, 0, float(_example_norms(grad).mean())))
        self.epoch = 0
        self.history.extend(records)
        return records

    def train_epoch(self, on_step: Callable[[str], None] | None = None) -> list[EpochRecord]:
        """Train every loss's model for one more epoch, on the same batches in the same order.

        ``on_step(loss)`` is called after each optimizer step.
        """
        if self.epoch < 0:
            raise ValueError("train_epoch: call start() first")
        epoch = self.epoch + 1
        data, size = self.data, self.config.batch_size
        order = batch_order(self.config.seed, epoch, data.x_train.shape[0])
        records = []
        for loss, model in self.models.items():
            model.train()
            norm_sum = torch.zeros((), dtype=torch.float64)
            for start in range(0, order.shape[0], size):
                rows = order[start : start + size]
                logits = model(data.x_train[rows])
                logits.retain_grad()
                value = objective(loss, logits, data.y_train[rows], binary=data.binary)
                model.zero_grad(set_to_none=True)
                torch.autograd.backward(value)
                if logits.grad is None:  # pragma: no cover - retained above
                    raise RuntimeError("the logits' gradient was not retained")
                norm_sum += _example_norms(logits.grad).sum()
                _sgd_step(model, self.config.lr)
                if on_step is not None:
                    on_step(loss)
            model.eval()
            records.append(self._record(loss, epoch, float(norm_sum) / order.shape[0]))
        self.epoch = epoch
        self.history.extend(records)
        return records

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: models, RNG, epoch and history (plain SGD keeps no
        optimizer state: no momentum buffers, no step counts)."""
        return {
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "models": {loss: model.state_dict() for loss, model in self.models.items()},
            "torch_rng_state": torch.get_rng_state(),
            "history": [asdict(record) for record in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output (the settings must match but ``epochs``)."""
        saved = DemoConfig.from_dict(state["config"])
        mine = self.config.to_dict()
        for key, value in saved.to_dict().items():
            if key != "epochs" and mine[key] != value:
                raise ValueError(f"checkpoint: its {key} is {value!r}, this run's is {mine[key]!r}")
        for loss, model in self.models.items():
            model.load_state_dict(state["models"][loss])
        torch.set_rng_state(state["torch_rng_state"])
        self.history = [EpochRecord(**record) for record in state["history"]]
        self.epoch = int(state["epoch"])
