"""``explain likelihood``: binary cross entropy is the negated mean log-likelihood.

A Bernoulli model gives each label y ∈ {0, 1} the probability P(y|x) = ŷ^y (1 - ŷ)^(1 - y);
the likelihood of a data set is the product of these, its log the sum of their logs, and the
negated mean of the logs is binary cross entropy: maximising the likelihood is minimising the
loss. The same steps for a categorical model (P(y|x) = q_y, q = softmax of the logits) give
softmax cross entropy, and exp of it is the perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import crossentropy as ce
from crossentropy.cli.errors import CliError
from crossentropy.cli.explain.common import CLASSES, as_f64, as_float, as_floats
from crossentropy.cli.explain.document import (
    Block,
    Doc,
    Formulas,
    Note,
    Num,
    TableBlock,
    aligned,
    fixed,
)
from crossentropy.cli.explain.inputs import (
    ExplainOptions,
    check_binary_labels,
    check_unit_interval,
)
from crossentropy.i18n import gettext as _

__all__ = [
    "BernoulliExample",
    "CategoricalExample",
    "LikelihoodSection",
    "compute_likelihood",
    "layout",
    "section",
]


@dataclass(frozen=True)
class BernoulliExample:
    label: float  # y
    prob: float  # ŷ = P(y = 1 | x)
    likelihood: float  # P(y|x) = ŷ^y (1 - ŷ)^(1 - y)
    log_likelihood: float  # ln P(y|x), -inf where P = 0
    loss: float  # crossentropy.binary_cross_entropy, reduction="none"


@dataclass(frozen=True)
class CategoricalExample:
    label: int  # the true class y
    logits: tuple[float, ...]
    probs: tuple[float, ...]  # q = softmax(logits)
    likelihood: float  # P(y|x) = q_y
    log_likelihood: float  # ln q_y
    loss: float  # crossentropy.sparse_softmax_cross_entropy, reduction="none"


@dataclass(frozen=True)
class LikelihoodSection:
    examples: tuple[BernoulliExample, ...]
    likelihood: float  # Π_i P(y_i|x_i)
    log_likelihood: float  # Σ_i ln P(y_i|x_i) = ln of the product
    mean_negative_log_likelihood: float  # -(1/n) Σ_i ln P(y_i|x_i): inf if some P is 0
    binary_cross_entropy: float  # crossentropy.binary_cross_entropy, mean (logs clamped at -100)
    binary_cross_entropy_sum: float  # the same, reduction="sum"
    categorical: tuple[CategoricalExample, ...]
    categorical_likelihood: float
    categorical_log_likelihood: float
    categorical_mean_negative_log_likelihood: float
    softmax_cross_entropy: float  # crossentropy.sparse_softmax_cross_entropy, mean
    perplexity: float  # exp(mean softmax cross entropy)
    likelihood_per_example: float  # geometric mean Π_i q_y^(1/n) = 1 / perplexity


_LABELS = (1.0, 0.0, 1.0, 1.0)
_PROBS = (0.9, 0.2, 0.7, 0.6)
# three samples of the running example's classes (cat, dog, pig): their logits and true class
_LOGITS = ((2.0, 1.0, 0.1), (0.5, 2.5, 0.3), (1.0, 0.2, 1.5))
_TRUE = (0, 1, 2)


def _log(values: np.ndarray) -> np.ndarray:
    """ln of probabilities, -inf for 0: minus their information (``crossentropy.information``)."""
    return -np.asarray(ce.information(values), dtype=np.float64)


def compute_likelihood(
    options: ExplainOptions,
    labels: Sequence[float] = _LABELS,
    probs: Sequence[float] = _PROBS,
    logits: Sequence[Sequence[float]] = _LOGITS,
    true_classes: Sequence[int] = _TRUE,
) -> LikelihoodSection:
    """The likelihood of ``labels`` under the Bernoulli predictions ``probs``, and of
    ``true_classes`` under the categorical model ``softmax(logits)``, step by step."""
    del options  # losses are in nats
    y, p = as_f64(labels), as_f64(probs)
    # P(y|x) = ŷ^y (1 - ŷ)^(1 - y): ŷ for a 1, 1 - ŷ for a 0 (the labels are 0 or 1)
    lik = np.where(y == 1.0, p, 1.0 - p)
    log_lik = _log(lik)
    bce = as_floats(ce.binary_cross_entropy(p, y, reduction="none"))
    examples = tuple(
        BernoulliExample(float(y[i]), float(p[i]), float(lik[i]), float(log_lik[i]), bce[i])
        for i in range(y.size)
    )
    total_log = math.fsum(log_lik) if np.all(np.isfinite(log_lik)) else -math.inf

    z = as_f64(logits)
    t = np.asarray(true_classes)
    q = np.asarray(ce.softmax(z, axis=-1), dtype=np.float64)
    q_y = q[np.arange(t.size), t]
    cat_log = _log(q_y)
    cat_loss = as_floats(ce.sparse_softmax_cross_entropy(z, t, reduction="none"))
    categorical = tuple(
        CategoricalExample(
            int(t[i]),
            as_floats(z[i]),
            as_floats(q[i]),
            float(q_y[i]),
            float(cat_log[i]),
            cat_loss[i],
        )
        for i in range(t.size)
    )
    mean_ce = as_float(ce.sparse_softmax_cross_entropy(z, t))
    return LikelihoodSection(
        examples,
        math.prod(float(v) for v in lik),
        total_log,
        -total_log / y.size,
        as_float(ce.binary_cross_entropy(p, y)),
        as_float(ce.binary_cross_entropy(p, y, reduction="sum")),
        categorical,
        math.prod(float(v) for v in q_y),
        math.fsum(cat_log),
        -math.fsum(cat_log) / t.size,
        mean_ce,
        math.exp(mean_ce),
        math.exp(math.fsum(cat_log) / t.size),
    )


def section(o: ExplainOptions, standalone: bool) -> LikelihoodSection:
    """The section for the options the user gave (``standalone``: not inside ``all``).

    Inside ``all``, ``--probs`` and ``--labels`` are mse-vs-ce's (rows of distributions and
    class indices), so this topic shows its own example there.
    """
    if not standalone or (o.labels is None and o.probs is None):
        return compute_likelihood(o)
    if o.probs is None:
        raise CliError("likelihood needs --probs too: one prediction ŷ per label", "--labels")
    if o.labels is None:
        raise CliError("likelihood needs --labels too: one 0/1 label per prediction", "--probs")
    if len(o.probs) != 1:
        raise CliError(
            "likelihood takes one row of predictions (comma-separated, no ';'); "
            f"got {len(o.probs)} rows",
            "--probs",
        )
    probs = o.probs[0]
    check_unit_interval(probs, "--probs", "a prediction ŷ")
    check_binary_labels(o.labels, "--labels")
    if len(o.labels) != len(probs):
        raise CliError(
            f"{len(o.labels)} labels for {len(probs)} predictions; give one prediction per label",
            "--labels",
        )
    return compute_likelihood(o, o.labels, probs)


def layout(s: LikelihoodSection) -> Doc:
    """The section laid out: formulas, tables and notes."""
    n = len(s.examples)
    bernoulli = TableBlock(
        (
            _("example"),
            "y",
            "ŷ",
            "P(y|x) = ŷ^y (1-ŷ)^(1-y)",
            "ln P(y|x)",
            _("library BCE"),
        ),
        title=_("a Bernoulli model on {n} examples").format(n=n),
    )
    for i, e in enumerate(s.examples):
        bernoulli.add(
            str(i + 1),
            Num(e.label, "g"),
            Num(e.prob, "g"),
            Num(e.likelihood, "f4"),
            Num(e.log_likelihood, "f4"),
            Num(e.loss, "f4"),
        )
    bernoulli.add(
        _("product / sum"),
        None,
        None,
        Num(s.likelihood, "g4"),
        Num(s.log_likelihood, "f4"),
        Num(s.binary_cross_entropy_sum, "f4"),
        bold=True,
        section=True,
    )
    bernoulli.add(
        _("-mean"),
        None,
        None,
        None,
        Num(s.mean_negative_log_likelihood, "f4"),
        Num(s.binary_cross_entropy, "f4"),
        bold=True,
    )
    blocks: list[Block] = [
        Formulas(
            "P(y|x) = ŷ^y (1 - ŷ)^(1 - y)          (y ∈ {0, 1}, ŷ = P(y = 1 | x))",
            "L(θ)   = Π_i P(y_i|x_i)",
            "ln L   = Σ_i [y_i ln ŷ_i + (1 - y_i) ln(1 - ŷ_i)]",
            "-(1/n) ln L = -(1/n) Σ_i [y_i ln ŷ_i + (1 - y_i) ln(1 - ŷ_i)] = BCE",
        ),
        bernoulli,
    ]
    shown = [f"{e.likelihood:g}" for e in s.examples]
    product = " · ".join(shown if n <= 8 else [*shown[:3], "…", shown[-1]])
    if math.isfinite(s.mean_negative_log_likelihood):
        blocks.append(
            Note(
                _(
                    "The likelihood of the {n} labels is the product {product} = {likelihood}; "
                    "its log is the sum of the logs, {log_likelihood}, and minus its mean is "
                    "{nll} nats, the binary cross entropy the library computes ({bce}). The log "
                    "turns a product of small numbers into a sum, and it is increasing, so the "
                    "parameters that maximise the likelihood are the ones that minimise the "
                    "binary cross entropy."
                ).format(
                    n=n,
                    product=product,
                    likelihood=f"{s.likelihood:.4g}",
                    log_likelihood=fixed(s.log_likelihood, 4),
                    nll=fixed(s.mean_negative_log_likelihood, 4),
                    bce=fixed(s.binary_cross_entropy, 4),
                )
            )
        )
    else:
        blocks.append(
            Note(
                _(
                    "A prediction of exactly 0 or 1 against the other label has probability 0: "
                    "the likelihood of the whole data set is 0, its log is -inf and the binary "
                    "cross entropy is infinite. The library, as PyTorch does, clamps each log "
                    "at -100, so it reports {bce} instead: a finite stand-in, not the true loss."
                ).format(bce=fixed(s.binary_cross_entropy, 4))
            )
        )
    names = [_(c) for c in CLASSES]
    categorical = TableBlock(
        (_("true class"), *(f"q({c})" for c in names), "P(y|x) = q_y", "ln q_y", _("library CE")),
        title=_("a categorical model: q = softmax(logits)"),
    )
    for c in s.categorical:
        categorical.add(
            names[c.label],
            *(Num(v, "f4") for v in c.probs),
            Num(c.likelihood, "f4"),
            Num(c.log_likelihood, "f4"),
            Num(c.loss, "f4"),
        )
    blanks: list[None] = [None] * len(names)
    categorical.add(
        _("product / sum"),
        *blanks,
        Num(s.categorical_likelihood, "g4"),
        Num(s.categorical_log_likelihood, "f4"),
        None,
        bold=True,
        section=True,
    )
    categorical.add(
        _("-mean"),
        *blanks,
        None,
        Num(s.categorical_mean_negative_log_likelihood, "f4"),
        Num(s.softmax_cross_entropy, "f4"),
        bold=True,
    )
    mean_nll, perplexity = aligned("-(1/n) ln L", _("perplexity"))
    blocks += [
        Formulas(
            "P(y|x) = q_y,   q = softmax(z)",
            mean_nll + " = -(1/n) Σ_i ln q_{y_i} = " + _("softmax cross entropy"),
            perplexity + " = exp(-(1/n) ln L) = L^(-1/n)",
        ),
        categorical,
        Note(
            _(
                "The same steps for a model over {classes} classes give softmax cross entropy: "
                "{nll} nats, as the library's sparse_softmax_cross_entropy computes ({ce}). "
                "Its exp is the perplexity, {perplexity}: the model is as unsure as a uniform "
                "choice among that many classes (the geometric mean of q_y is "
                "{geometric} = 1 / {perplexity})."
            ).format(
                classes=len(names),
                nll=fixed(s.categorical_mean_negative_log_likelihood, 4),
                ce=fixed(s.softmax_cross_entropy, 4),
                perplexity=fixed(s.perplexity, 4),
                geometric=fixed(s.likelihood_per_example, 4),
            )
        ),
    ]
    return Doc("likelihood", _("Binary cross entropy from maximum likelihood"), blocks)
