"""``explain mse-vs-ce``: two models scored by MSE and by cross entropy.

Then one sample ever more confidently wrong under both losses, and the gradients of both with
respect to the logit of a saturated sigmoid output: why MSE learns slowly when most wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import crossentropy as ce
from crossentropy import gradients
from crossentropy.cli.errors import CliError
from crossentropy.cli.explain.common import CLASSES, as_f64, as_float, as_floats, numbered
from crossentropy.cli.explain.document import (
    Block,
    Cell,
    Doc,
    Formulas,
    Note,
    Num,
    TableBlock,
    fixed,
)
from crossentropy.cli.explain.inputs import ExplainOptions, check_distribution

__all__ = [
    "ConfidentMiss",
    "ModelComparisonSection",
    "ModelScore",
    "SampleScore",
    "Saturation",
    "compute_model_comparison",
    "layout",
    "section",
]


@dataclass(frozen=True)
class SampleScore:
    true_class: str
    probs: tuple[float, ...]
    p_true: float
    cross_entropy: float  # -sum_c y_c ln q_c = -ln q_true
    mse: float  # sum_c (q_c - y_c)^2


@dataclass(frozen=True)
class ModelScore:
    name: str
    samples: tuple[SampleScore, ...]
    mean_cross_entropy: float
    mean_mse: float

    @property
    def worst(self) -> SampleScore:
        return max(self.samples, key=lambda s: s.cross_entropy)


@dataclass(frozen=True)
class ConfidentMiss:
    probs: tuple[float, ...]
    p_true: float
    cross_entropy: float
    mse: float


@dataclass(frozen=True)
class Saturation:
    """One sigmoid output with target 1, scored by both losses, with d loss / d logit."""

    logit: float
    prob: float  # sigmoid(z)
    cross_entropy: float
    cross_entropy_grad: float  # d CE / dz = sigmoid(z) - 1
    mse: float  # (sigmoid(z) - 1)^2
    mse_grad_prob: float  # d MSE / d sigmoid = 2 (sigmoid(z) - 1)
    sigmoid_grad: float  # d sigmoid / dz = sigmoid(z) (1 - sigmoid(z))
    mse_grad: float  # chain rule: their product


@dataclass(frozen=True)
class ModelComparisonSection:
    classes: tuple[str, ...]
    models: tuple[ModelScore, ...]
    miss_class: str
    misses: tuple[ConfidentMiss, ...]  # ever more confident wrong predictions of one sample
    saturation: tuple[Saturation, ...] = ()


_TRUE = ("pig", "dog", "cat")
_MODELS = (
    ("model 1", ((0.3, 0.3, 0.4), (0.3, 0.4, 0.3), (0.1, 0.2, 0.7))),
    ("model 2", ((0.1, 0.2, 0.7), (0.1, 0.7, 0.2), (0.3, 0.4, 0.3))),
)


def compute_model_comparison(
    options: ExplainOptions,
    classes: Sequence[str] = CLASSES,
    true_classes: Sequence[str] = _TRUE,
    models: Sequence[tuple[str, Sequence[Sequence[float]]]] = _MODELS,
    miss_probs: Sequence[float] = (0.1, 0.01, 0.001),
    saturation_logits: Sequence[float] = (-6.0, -3.0, 0.0, 3.0),
) -> ModelComparisonSection:
    """Per-sample and mean cross entropy (nats) and squared error summed over the classes.

    ``misses`` scores one sample of the first class whose predicted probability falls through
    ``miss_probs``, the rest going to the last class: a more and more confident mistake.
    ``saturation`` differentiates both losses of a sigmoid output with respect to its logit.
    """
    del options  # losses are in nats
    labels = np.asarray([list(classes).index(c) for c in true_classes])
    onehot = np.eye(len(classes), dtype=np.float64)[labels]
    scores = []
    for name, predictions in models:
        q = as_f64(predictions)
        ce_per_sample = as_floats(ce.cross_entropy(onehot, q, axis=-1))
        mse_per_sample = tuple(
            as_float(ce.mse(q[i], onehot[i], reduction="sum")) for i in range(len(labels))
        )
        samples = tuple(
            SampleScore(
                true_classes[i],
                as_floats(q[i]),
                float(q[i, labels[i]]),
                ce_per_sample[i],
                mse_per_sample[i],
            )
            for i in range(len(labels))
        )
        scores.append(
            ModelScore(
                name,
                samples,
                float(np.mean(ce_per_sample)),
                float(np.mean(mse_per_sample)),
            )
        )
    n = len(classes)
    miss_q = np.zeros((len(miss_probs), n), dtype=np.float64)
    miss_q[:, 0] = miss_probs
    miss_q[:, -1] = 1.0 - miss_q[:, 0]
    miss_y = np.zeros_like(miss_q)
    miss_y[:, 0] = 1.0
    miss_ce = as_floats(ce.cross_entropy(miss_y, miss_q, axis=-1))
    misses = tuple(
        ConfidentMiss(
            as_floats(miss_q[i]),
            float(miss_q[i, 0]),
            miss_ce[i],
            as_float(ce.mse(miss_q[i], miss_y[i], reduction="sum")),
        )
        for i in range(len(miss_probs))
    )
    z = as_f64(saturation_logits)
    ones = np.ones_like(z)
    sig = np.asarray(ce.sigmoid(z))
    bce, bce_grad = gradients.sigmoid_cross_entropy(z, ones, reduction="none")
    sq, sq_grad = gradients.mse(sig, ones, reduction="none")
    dsig = sig * (1.0 - sig)
    saturation = tuple(
        Saturation(
            float(z[i]),
            float(sig[i]),
            as_floats(bce)[i],
            as_floats(bce_grad)[i],
            as_floats(sq)[i],
            as_floats(sq_grad)[i],
            float(dsig[i]),
            float(np.asarray(sq_grad)[i] * dsig[i]),
        )
        for i in range(z.size)
    )
    return ModelComparisonSection(tuple(classes), tuple(scores), classes[0], misses, saturation)


def section(o: ExplainOptions, standalone: bool) -> ModelComparisonSection:
    """The section for the options the user gave (``standalone``: not inside ``all``)."""
    if o.probs is None:
        if standalone and o.labels is not None:
            raise CliError("mse-vs-ce needs --probs (one row per label) as well", "--labels")
        return compute_model_comparison(o)
    if o.labels is None:
        raise CliError("mse-vs-ce needs --labels too: the true class of each row", "--probs")
    n_classes = len(o.probs[0])
    if n_classes < 2:
        raise CliError("each row needs at least 2 classes", "--probs")
    for i, row in enumerate(o.probs):
        check_distribution(row, "--probs", f"row {i}")
    if len(o.labels) != len(o.probs):
        raise CliError(
            f"{len(o.labels)} labels for {len(o.probs)} rows of --probs; give one each", "--labels"
        )
    classes = numbered("class ", n_classes)
    true = []
    for v in o.labels:
        if v != int(v) or not 0 <= v < n_classes:
            raise CliError(
                f"label {v:g} is not a class index in [0, {n_classes}) for mse-vs-ce", "--labels"
            )
        true.append(classes[int(v)])
    return compute_model_comparison(o, classes, true, [("your model", o.probs)])


def layout(s: ModelComparisonSection) -> Doc:
    """The section laid out: formulas, tables and notes."""
    blocks: list[Block] = [
        Formulas(
            "cross entropy  CE  = -Σ_c y_c ln q_c = -ln q_true   (y one-hot)",
            "squared error  MSE =  Σ_c (q_c - y_c)²              (sum over the classes)",
        )
    ]
    for m in s.models:
        table = TableBlock(
            ("true class", *(f"q({c})" for c in s.classes), "q_true", "CE", "MSE"),
            title=f"{m.name}, per sample",
        )
        for sample in m.samples:
            table.add(
                sample.true_class,
                *(Num(v, "g") for v in sample.probs),
                Num(sample.p_true, "g"),
                Num(sample.cross_entropy),
                Num(sample.mse),
            )
        blanks: list[Cell] = [None] * (len(s.classes) + 1)
        table.add(
            "average",
            *blanks,
            Num(m.mean_cross_entropy),
            Num(m.mean_mse),
            bold=True,
            section=True,
        )
        blocks.append(table)
    summary = TableBlock(
        ("average loss", *(m.name for m in s.models)), title="summary (lower is better)"
    )
    summary.add("cross entropy (nats)", *(Num(m.mean_cross_entropy) for m in s.models))
    summary.add("MSE", *(Num(m.mean_mse) for m in s.models))
    blocks.append(summary)
    misses = TableBlock(
        (*(f"q({c})" for c in s.classes), "CE", "MSE"),
        title=f"one {s.miss_class}, ever more confidently wrong",
    )
    for miss in s.misses:
        misses.add(*(Num(v, "g") for v in miss.probs), Num(miss.cross_entropy), Num(miss.mse))
    blocks.append(misses)
    best = min(s.models, key=lambda m: m.mean_cross_entropy)
    ranking = ""
    if len(s.models) > 1:
        agree = best is min(s.models, key=lambda m: m.mean_mse)
        others = [m for m in s.models if m is not best]
        dominates = all(
            b.p_true > o.p_true
            for m in others
            for b, o in zip(best.samples, m.samples, strict=True)
        )
        why = ": it gives the true class more probability on every sample" if dominates else ""
        ranking = (
            f"Both losses rank {best.name} better{why}. But"
            if agree
            else f"Cross entropy ranks {best.name} better, MSE does not. And"
        )
    else:
        ranking = "Both losses fall as q_true rises. But"
    first, last = s.misses[0], s.misses[-1]
    blocks.append(
        Note(
            f"{ranking} cross entropy punishes a confident mistake far more: as "
            f"q({s.miss_class}) falls from {first.p_true:g} to {last.p_true:g}, -ln q climbs "
            f"from {fixed(first.cross_entropy)} to {fixed(last.cross_entropy)} nats without bound, "
            f"while the squared error only creeps from {fixed(first.mse)} to {fixed(last.mse)}, "
            f"never above 2."
        )
    )
    if s.saturation:
        sat = TableBlock(
            (
                "logit z",
                "σ(z)",
                "CE",
                "dCE/dz = σ - 1",
                "MSE",
                "dMSE/dσ",
                "dσ/dz",
                "dMSE/dz",
            ),
            title="one sigmoid output, target y = 1: gradients with respect to the logit",
        )
        for r in s.saturation:
            sat.add(
                Num(r.logit, "g"),
                Num(r.prob, "f4"),
                Num(r.cross_entropy, "f4"),
                Num(r.cross_entropy_grad, "f4"),
                Num(r.mse, "f4"),
                Num(r.mse_grad_prob, "f4"),
                Num(r.sigmoid_grad, "f4"),
                Num(r.mse_grad, "f4"),
            )
        blocks += [
            Formulas(
                "dCE/dz  = σ(z) - y",
                "dMSE/dz = dMSE/dσ · dσ/dz = 2(σ(z) - y) · σ(z)(1 - σ(z))",
            ),
            sat,
        ]
        worst = min(s.saturation, key=lambda r: r.logit)
        blocks.append(
            Note(
                f"When the output is confidently wrong (z = {worst.logit:g}), the cross-entropy "
                f"gradient is {fixed(worst.cross_entropy_grad, 4)}, a full-size step, while MSE's "
                f"is {fixed(worst.mse_grad, 4)}: the factor σ(1 - σ) of a saturated sigmoid makes "
                f"MSE learn slowly exactly when it is most wrong."
            )
        )
    return Doc("mse-vs-ce", "MSE vs cross entropy: scoring classifiers", blocks)
