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
from crossentropy.cli.explain.common import CLASSES, as_f64, as_float, as_floats, class_names
from crossentropy.cli.explain.document import (
    Block,
    Cell,
    Doc,
    Formulas,
    Note,
    Num,
    TableBlock,
    aligned,
    fixed,
    sentences,
)
from crossentropy.cli.explain.inputs import NATS, ExplainOptions, check_distribution
from crossentropy.i18n import gettext as _
from crossentropy.i18n import mark as N_

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


_TRUE = (N_("pig"), N_("dog"), N_("cat"))
_MODELS = (
    (N_("model 1"), ((0.3, 0.3, 0.4), (0.3, 0.4, 0.3), (0.1, 0.2, 0.7))),
    (N_("model 2"), ((0.1, 0.2, 0.7), (0.1, 0.7, 0.2), (0.3, 0.4, 0.3))),
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
    The names (classes, models) are translated.
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
                _(true_classes[i]),
                as_floats(q[i]),
                float(q[i, labels[i]]),
                ce_per_sample[i],
                mse_per_sample[i],
            )
            for i in range(len(labels))
        )
        scores.append(
            ModelScore(
                _(name),
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
    names = tuple(_(c) for c in classes)
    return ModelComparisonSection(names, tuple(scores), names[0], misses, saturation)


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
    classes = class_names(n_classes, True)
    true = []
    for v in o.labels:
        if v != int(v) or not 0 <= v < n_classes:
            raise CliError(
                f"label {v:g} is not a class index in [0, {n_classes}) for mse-vs-ce", "--labels"
            )
        true.append(classes[int(v)])
    return compute_model_comparison(o, classes, true, [(_("your model"), o.probs)])


def layout(s: ModelComparisonSection) -> Doc:
    """The section laid out: formulas, tables and notes."""
    ce_name, mse_name = aligned(_("cross entropy"), _("squared error"))
    one_hot = _("{y} one-hot").format(y="y")
    over_classes = _("sum over the classes")
    blocks: list[Block] = [
        Formulas(
            ce_name + "  CE  = -Σ_c y_c ln q_c = -ln q_true   (" + one_hot + ")",
            mse_name + "  MSE =  Σ_c (q_c - y_c)²              (" + over_classes + ")",
        )
    ]
    for m in s.models:
        table = TableBlock(
            (_("true class"), *(f"q({c})" for c in s.classes), "q_true", "CE", "MSE"),
            title=_("{model}, per sample").format(model=m.name),
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
            _("average"),
            *blanks,
            Num(m.mean_cross_entropy),
            Num(m.mean_mse),
            bold=True,
            section=True,
        )
        blocks.append(table)
    summary = TableBlock(
        (_("average loss"), *(m.name for m in s.models)), title=_("summary (lower is better)")
    )
    ce_in_nats = _("cross entropy") + " (" + NATS.label + ")"
    summary.add(ce_in_nats, *(Num(m.mean_cross_entropy) for m in s.models))
    summary.add("MSE", *(Num(m.mean_mse) for m in s.models))
    blocks.append(summary)
    misses = TableBlock(
        (*(f"q({c})" for c in s.classes), "CE", "MSE"),
        title=_("one {label}, ever more confidently wrong").format(label=s.miss_class),
    )
    for miss in s.misses:
        misses.add(*(Num(v, "g") for v in miss.probs), Num(miss.cross_entropy), Num(miss.mse))
    blocks.append(misses)
    best = min(s.models, key=lambda m: m.mean_cross_entropy)
    agree = True
    if len(s.models) > 1:
        agree = best is min(s.models, key=lambda m: m.mean_mse)
        others = [m for m in s.models if m is not best]
        dominates = all(
            b.p_true > o.p_true
            for m in others
            for b, o in zip(best.samples, m.samples, strict=True)
        )
        if not agree:
            ranking = _("Cross entropy ranks {model} better, MSE does not.")
        elif dominates:
            ranking = _(
                "Both losses rank {model} better: it gives the true class more probability on "
                "every sample."
            )
        else:
            ranking = _("Both losses rank {model} better.")
        ranking = ranking.format(model=best.name)
    else:
        ranking = _("Both losses fall as {q_true} rises.").format(q_true="q_true")
    first, last = s.misses[0], s.misses[-1]
    punishes = (
        _(
            "But cross entropy punishes a confident mistake far more: as {q} falls from "
            "{first_p:g} to {last_p:g}, {minus_log_q} climbs from {first_ce} to {last_ce} nats "
            "without bound, while the squared error only creeps from {first_mse} to "
            "{last_mse}, never above 2."
        )
        if agree
        else _(
            "And cross entropy punishes a confident mistake far more: as {q} falls from "
            "{first_p:g} to {last_p:g}, {minus_log_q} climbs from {first_ce} to {last_ce} nats "
            "without bound, while the squared error only creeps from {first_mse} to "
            "{last_mse}, never above 2."
        )
    )
    blocks.append(
        Note(
            sentences(
                ranking,
                punishes.format(
                    q=f"q({s.miss_class})",
                    first_p=first.p_true,
                    last_p=last.p_true,
                    minus_log_q="-ln q",
                    first_ce=fixed(first.cross_entropy),
                    last_ce=fixed(last.cross_entropy),
                    first_mse=fixed(first.mse),
                    last_mse=fixed(last.mse),
                ),
            )
        )
    )
    if s.saturation:
        sat = TableBlock(
            (
                _("logit {symbol}").format(symbol="z"),
                "σ(z)",
                "CE",
                "dCE/dz = σ - 1",
                "MSE",
                "dMSE/dσ",
                "dσ/dz",
                "dMSE/dz",
            ),
            title=_(
                "one sigmoid output, target {target}: gradients with respect to the logit"
            ).format(target="y = 1"),
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
                _(
                    "When the output is confidently wrong ({z}), the cross-entropy gradient is "
                    "{ce_grad}, a full-size step, while MSE's is {mse_grad}: the factor {factor} "
                    "of a saturated sigmoid makes MSE learn slowly exactly when it is most wrong."
                ).format(
                    z=f"z = {worst.logit:g}",
                    ce_grad=fixed(worst.cross_entropy_grad, 4),
                    mse_grad=fixed(worst.mse_grad, 4),
                    factor="σ(1 - σ)",
                )
            )
        )
    return Doc("mse-vs-ce", _("MSE vs cross entropy: scoring classifiers"), blocks)
