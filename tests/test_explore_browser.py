"""The explore page in a real browser: Debian's chromium, headless, driven by Playwright.

The tests open the page from its file (and once over ``--serve``), move the sliders, type
into the number boxes, press arrow keys, click radio buttons, checkboxes and tabs, and read
back every number the page shows. Each equals the library's float64 value
(:mod:`crossentropy` and :mod:`crossentropy.gradients`) to 4 decimals as shown and to 1e-12
in its full-precision ``data-value``, over random configurations of both views; the gradients
also match central finite differences of the library's losses as functions of the logits
(the temperature's 1/T included). The regression view's four losses and derivatives equal
:func:`crossentropy.l1`, :func:`~crossentropy.mse`, :func:`~crossentropy.smooth_l1` and
:func:`~crossentropy.huber` and their :mod:`crossentropy.gradients`, and finite differences.
The page does all of it in English, Chinese and Russian: the language switch changes every
word and no number. The page makes no request but its own, reports no error, lays out its
MathML, and its screenshots are saved as test artifacts (``$CROSSENTROPY_TEST_ARTIFACTS``,
else pytest's temporary directory).

Skipped, with the reason shown, only where no chromium is installed (``.ci/run`` installs
Debian's ``chromium``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import browser
import crossentropy as ce
from crossentropy import gradients, i18n
from crossentropy.explore import write_page

CHROMIUM = browser.find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install chromium; .ci/run installs it), "
    "so the explore page cannot be tested in a browser",
)

REL = 1e-12  # the page's float64 JavaScript against the library's float64 NumPy
SHOWN = 0.5e-4 + 1e-9  # "equal to 4 decimals"

Vector = np.ndarray[Any, np.dtype[np.float64]]


# ------------------------------------------------------------------------------------------
# the float64 references, from the library
# ------------------------------------------------------------------------------------------


def softmax_reference(x: Vector, y: Vector, t: float) -> dict[str, Any]:
    z = x / t
    p = np.asarray(ce.softmax(z))
    loss, dz = gradients.softmax_cross_entropy(z, y)
    sq, dp = gradients.mse(p, y, reduction="sum")
    jacobian = np.diag(p) - np.outer(p, p)  # d softmax / dz
    return {
        "y": y,
        "p": p,
        "ce-nats": float(loss),
        "ce-bits": float(loss) / math.log(2),
        "mse": float(sq),
        "grad-ce": np.asarray(dz) / t,
        "grad-mse": jacobian @ np.asarray(dp) / t,
    }


def sigmoid_reference(x: Vector, y: Vector, t: float) -> dict[str, Any]:
    z = x / t
    s = np.asarray(ce.sigmoid(z))
    bce, dz = gradients.sigmoid_cross_entropy(z, y, reduction="none")
    se, ds = gradients.mse(s, y, reduction="none")
    return {
        "sigmoid": s,
        "bce": np.asarray(bce),
        "grad-bce": np.asarray(dz) / t,
        "se": np.asarray(se),
        "grad-se": np.asarray(ds) * s * (1.0 - s) / t,
        "bce-sum": float(np.sum(bce)),
        "bce-bits": float(np.sum(bce)) / math.log(2),
        "se-sum": float(np.sum(se)),
    }


def regression_reference(r: float, beta: float, delta: float) -> dict[str, float]:
    """The four losses at residual r (prediction r, target 0) from the library's loss
    functions, their derivatives from crossentropy.gradients."""
    x, t = np.array([r]), np.array([0.0])
    ref = {}
    for name, value, (_, grad) in (
        ("l1", ce.l1(x, t, reduction="none"), gradients.l1(x, t, reduction="none")),
        ("l2", ce.mse(x, t, reduction="none"), gradients.mse(x, t, reduction="none")),
        (
            "smooth-l1",
            ce.smooth_l1(x, t, beta=beta, reduction="none"),
            gradients.smooth_l1(x, t, beta=beta, reduction="none"),
        ),
        (
            "huber",
            ce.huber(x, t, delta=delta, reduction="none"),
            gradients.huber(x, t, delta=delta, reduction="none"),
        ),
    ):
        ref[f"reg-{name}"] = float(np.asarray(value)[0])
        ref[f"reg-grad-{name}"] = float(np.asarray(grad)[0])
    return ref


def regression_losses(beta: float, delta: float) -> dict[str, Callable[[float], float]]:
    """Each regression loss as a function of the residual, from the library."""
    t = np.array([0.0])

    def at(f: Callable[..., Any], **kw: float) -> Callable[[float], float]:
        return lambda r: float(np.asarray(f(np.array([r]), t, reduction="none", **kw))[0])

    return {
        "l1": at(ce.l1),
        "l2": at(ce.mse),
        "smooth-l1": at(ce.smooth_l1, beta=beta),
        "huber": at(ce.huber, delta=delta),
    }


def softmax_losses(y: Vector, t: float) -> dict[str, Callable[[Vector], float]]:
    return {
        "ce": lambda x: float(ce.softmax_cross_entropy(x / t, y)),
        "mse": lambda x: float(ce.mse(ce.softmax(x / t), y, reduction="sum")),
    }


def sigmoid_losses(y: Vector, t: float) -> dict[str, Callable[[Vector], float]]:
    return {
        "bce": lambda x: float(ce.sigmoid_cross_entropy(x / t, y, reduction="sum")),
        "se": lambda x: float(ce.mse(ce.sigmoid(x / t), y, reduction="sum")),
    }


def central_difference(f: Callable[[Vector], float], x: Vector, h: float = 1e-6) -> Vector:
    grad = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        grad[i] = (f(x + e) - f(x - e)) / (2 * h)
    return grad


def check(shown: dict[str, tuple[str, float]], key: str, expected: float) -> None:
    text, value = shown[key]
    assert value == pytest.approx(expected, rel=REL, abs=1e-13), (key, value, expected)
    assert abs(float(text) - expected) <= SHOWN, (key, text, expected)


def check_all(shown: dict[str, tuple[str, float]], ref: dict[str, Any]) -> int:
    """Every reference value against the page's; the number of values checked."""
    n = 0
    for key, expected in ref.items():
        if np.ndim(expected) == 0:
            check(shown, key, float(expected))
            n += 1
        else:
            for i, v in enumerate(expected):
                check(shown, f"{key}-{i}", float(v))
                n += 1
    return n


# ------------------------------------------------------------------------------------------
# the browser
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    assert CHROMIUM is not None
    with browser.chromium(CHROMIUM) as context:
        yield context


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_page(tmp_path_factory.mktemp("explore") / "explore.html", [2.0, 1.0, 0.1])
    return path.as_uri()


@pytest.fixture
def page(chromium: Any, page_url: str) -> Iterator[Any]:
    tab = browser.open_page(chromium, page_url)
    yield tab
    # whatever the test did, the page asked for nothing but itself and reported no error
    assert tab.requests == [page_url]
    assert tab.problems == []
    tab.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    named = os.environ.get("CROSSENTROPY_TEST_ARTIFACTS")
    where = Path(named) if named else tmp_path_factory.mktemp("artifacts")
    where.mkdir(parents=True, exist_ok=True)
    return where


def logits_of(page: Any) -> Vector:
    n = int(page.input_value("#classes"))
    return np.array([float(page.input_value(f"#logit-{i}")) for i in range(n)])


def set_logits(page: Any, values: Vector, rng: np.random.Generator) -> Vector:
    """Each logit through its slider or its number box (chosen at random); the values taken."""
    taken = []
    for i, v in enumerate(values):
        box = f"logit-{i}" if rng.random() < 0.5 else f"logit-{i}-value"
        taken.append(float(browser.set_value(page, box, f"{v:.2f}")))
        # the slider and its box agree
        assert float(page.input_value(f"#logit-{i}")) == taken[-1]
        assert float(page.input_value(f"#logit-{i}-value")) == taken[-1]
    return np.array(taken)


def set_temperature(page: Any, rng: np.random.Generator) -> float:
    if rng.random() < 0.5:
        browser.set_value(page, "temperature", f"{rng.uniform(-1, 1):.3f}")  # the log slider
    else:
        browser.set_value(page, "temperature-value", f"{10 ** rng.uniform(-1, 1):.2f}")
    t = float(page.input_value("#temperature-value"))
    assert 0.1 <= t <= 10
    return t


# ------------------------------------------------------------------------------------------
# the softmax view
# ------------------------------------------------------------------------------------------


def test_starting_values(page: Any) -> None:
    """As opened: logits 2, 1, 0.1, class 0, T = 1 (the README's worked example)."""
    shown = browser.outputs(page)
    ref = softmax_reference(np.array([2.0, 1.0, 0.1]), np.array([1.0, 0.0, 0.0]), 1.0)
    assert check_all(shown, ref) == 3 * 4 + 3
    assert shown["ce-nats"][0] == "0.4170" and shown["p-0"][0] == "0.6590"
    check(shown, "p-sum", 1.0)
    check(shown, "grad-ce-sum", 0.0)


@pytest.mark.parametrize("seed", range(4))
def test_softmax_view_matches_the_library(page: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(3):
        n = int(rng.integers(2, 7))
        browser.set_value(page, "classes", n)
        x = set_logits(page, rng.uniform(-8, 8, n), rng)
        t = set_temperature(page, rng)
        if rng.random() < 0.5:
            page.click("#label-mode-class")
            k = int(rng.integers(n))
            page.click(f"#true-class-{k}")
            y = np.eye(n)[k]
        else:
            page.click("#label-mode-soft")
            w = np.round(rng.uniform(0, 1, n), 2)
            w[rng.integers(n)] = 0.5  # never all zero
            for i, v in enumerate(w):
                browser.set_value(page, f"soft-{i}", f"{v:.2f}")
            y = w / w.sum()
        shown = browser.outputs(page)
        ref = softmax_reference(x, y, t)
        assert check_all(shown, ref) == 4 * n + 3
        # the gradients are those of the losses as functions of the logits x themselves
        for name, f in softmax_losses(y, t).items():
            fd = central_difference(f, x)
            page_grad = np.array([shown[f"grad-{name}-{i}"][1] for i in range(n)])
            np.testing.assert_allclose(page_grad, fd, atol=1e-6)
        check(shown, "p-sum", 1.0)
        check(shown, "grad-ce-sum", 0.0)  # sum(y) = 1: p - y sums to zero


def test_keyboard_moves_a_slider(page: Any) -> None:
    page.focus("#logit-2")
    for _ in range(25):
        page.keyboard.press("ArrowRight")
    page.focus("#logit-0")
    page.keyboard.press("ArrowLeft")
    x = logits_of(page)
    np.testing.assert_array_equal(x, [1.99, 1.0, 0.35])
    check_all(browser.outputs(page), softmax_reference(x, np.array([1.0, 0.0, 0.0]), 1.0))


def test_class_count_keeps_the_logits(page: Any) -> None:
    browser.set_value(page, "classes", 5)
    np.testing.assert_array_equal(logits_of(page), [2.0, 1.0, 0.1, 0.0, 0.0])
    page.click("#true-class-4")
    browser.set_value(page, "classes", 2)  # the true class is gone: the last one remaining
    np.testing.assert_array_equal(logits_of(page), [2.0, 1.0])
    assert page.is_checked("#true-class-1")
    check_all(browser.outputs(page), softmax_reference(np.array([2.0, 1.0]), np.eye(2)[1], 1.0))
    browser.set_value(page, "classes", 9)  # out of range: ignored
    assert len(logits_of(page)) == 2


def curve(page: Any, which: str) -> dict[str, Any]:
    found: dict[str, Any] = page.evaluate(
        """(id) => {
            const svg = document.getElementById(id);
            const line = svg.querySelector("polyline");
            const marker = svg.querySelector("circle.marker");
            return {
                x: line.dataset.x.split(",").map(Number),
                y: line.dataset.y.split(",").map(Number),
                mx: Number(marker.dataset.x), my: Number(marker.dataset.y),
                slope: Number(svg.querySelector("line.tangent").dataset.slope),
                concave: Number(svg.parentElement.dataset.concave),
                title: svg.querySelector("text.title").textContent,
            };
        }""",
        which,
    )
    return found


def test_softmax_curves(page: Any) -> None:
    browser.set_value(page, "classes", 4)
    x = set_logits(page, np.array([3.0, 1.0, -2.0, 0.5]), np.random.default_rng(0))
    page.click("#true-class-2")
    t = float(browser.set_value(page, "temperature-value", "1.5"))
    y = np.eye(4)[2]
    losses = softmax_losses(y, t)
    shown = browser.outputs(page)
    for k in ("label", "0"):  # the true class's logit (the default), then logit 0
        page.select_option("#curve-logit", k)
        j = 2 if k == "label" else 0
        for name, svg in (("ce", "curve-ce"), ("mse", "curve-mse")):
            c = curve(page, svg)
            assert c["x"][0] == -10 and c["x"][-1] == 10 and len(c["x"]) == 201
            for i in (0, 37, 100, 163, 200):
                at = x.copy()
                at[j] = c["x"][i]
                assert c["y"][i] == pytest.approx(losses[name](at), rel=REL, abs=1e-13)
            # the marked point is the current one, the tangent's slope the gradient shown
            assert c["mx"] == x[j]
            key = "ce-nats" if name == "ce" else "mse"
            assert c["my"] == pytest.approx(shown[key][1], rel=REL)
            assert c["slope"] == pytest.approx(shown[f"grad-{name}-{j}"][1], rel=REL, abs=1e-13)
        # cross entropy is convex in every logit; MSE on the softmax is not (here)
        assert curve(page, "curve-ce")["concave"] == 0
        assert curve(page, "curve-mse")["concave"] > 0


def test_mathml_is_laid_out(page: Any) -> None:
    """Chromium lays out the formulas as MathML: a fraction's numerator sits above its
    denominator (without MathML support they would run side by side as text)."""
    above = page.evaluate(
        """() => [...document.querySelectorAll("mfrac")]
            .filter((f) => f.getBoundingClientRect().height > 0)
            .map((f) => f.children[0].getBoundingClientRect().bottom
                        <= f.children[1].getBoundingClientRect().top + 1)"""
    )
    assert len(above) >= 4 and all(above)


# ------------------------------------------------------------------------------------------
# the sigmoid (binary, multi-label) view
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_binary_view_matches_the_library(page: Any, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    page.click("#view-binary")
    assert page.is_visible("#bce-sum-total") and not page.is_visible("#ce-nats")
    for _ in range(3):
        n = int(rng.integers(2, 7))
        browser.set_value(page, "classes", n)
        x = set_logits(page, rng.uniform(-8, 8, n), rng)
        t = set_temperature(page, rng)
        y = (rng.random(n) < 0.5).astype(np.float64)
        for i in range(n):
            if page.is_checked(f"#target-{i}") != bool(y[i]):
                page.click(f"#target-{i}")
        shown = browser.outputs(page)
        ref = sigmoid_reference(x, y, t)
        assert check_all(shown, ref) == 5 * n + 3
        check(shown, "bce-sum-total", ref["bce-sum"])
        check(shown, "se-sum-total", ref["se-sum"])
        # each gradient is the derivative of its own class's loss in that class's logit
        for i in range(n):
            e = np.eye(n)[i] * 1e-6
            for name, f in sigmoid_losses(y, t).items():
                fd = (f(x + e) - f(x - e)) / 2e-6
                assert shown[f"grad-{name}-{i}"][1] == pytest.approx(fd, abs=1e-6)
        k = int(rng.integers(n))
        page.select_option("#curve-logit", str(k))
        c = curve(page, "curve-ce")
        at = x.copy()
        at[k] = c["x"][50]
        expected = float(ce.sigmoid_cross_entropy(at / t, y, reduction="none")[k])
        assert c["y"][50] == pytest.approx(expected, rel=REL, abs=1e-13)
        assert c["mx"] == x[k] and c["concave"] == 0
        assert c["slope"] == pytest.approx(shown[f"grad-bce-{k}"][1], rel=REL, abs=1e-13)
        assert f"class {k}" in c["title"]


def test_views_share_the_logits(page: Any) -> None:
    x = set_logits(page, np.array([-3.0, 4.25, 0.5]), np.random.default_rng(1))
    page.click("#view-binary")
    np.testing.assert_array_equal(logits_of(page), x)
    check_all(browser.outputs(page), sigmoid_reference(x, np.array([1.0, 0.0, 0.0]), 1.0))
    page.click("#view-softmax")
    np.testing.assert_array_equal(logits_of(page), x)
    check_all(browser.outputs(page), softmax_reference(x, np.eye(3)[0], 1.0))


# ------------------------------------------------------------------------------------------
# the regression view
# ------------------------------------------------------------------------------------------


def set_regression(page: Any, r: float, beta: float, delta: float, rng: Any) -> tuple[float, ...]:
    """The residual, beta and delta, each through its slider or its number box (chosen at
    random); the values taken (the slider and its box agree)."""
    taken = []
    for name, v in (("residual", r), ("beta", beta), ("delta", delta)):
        box = name if rng.random() < 0.5 else f"{name}-value"
        taken.append(float(browser.set_value(page, box, f"{v:.2f}")))
        assert float(page.input_value(f"#{name}")) == float(page.input_value(f"#{name}-value"))
        assert float(page.input_value(f"#{name}-value")) == taken[-1]
    return tuple(taken)


def svg_series(page: Any, svg_id: str) -> dict[str, dict[str, Any]]:
    """Each series of a plot: its polyline's x and y, and its marker's x and y."""
    found: dict[str, dict[str, Any]] = page.evaluate(
        """(id) => Object.fromEntries([...document.querySelectorAll(
                "#" + id + " polyline[data-series]")].map((line) => {
            const name = line.dataset.series;
            const marker = document.querySelector(
                "#" + id + ' circle.marker[data-series="' + name + '"]');
            return [name, {
                x: line.dataset.x.split(",").map(Number),
                y: line.dataset.y.split(",").map(Number),
                mx: Number(marker.dataset.x), my: Number(marker.dataset.y),
            }];
        }))""",
        svg_id,
    )
    return found


# (residual, beta, delta): inside and outside the quadratic zones, r = 0 (L1's derivative
# is 0 there, as sign(0)), r on a zone's edge (|r| = beta: the linear side), beta = 0 (smooth
# L1 is L1), the smallest delta, the ends of the slider
REGRESSION_CASES = [
    (1.5, 1.0, 2.0),
    (0.0, 1.0, 1.0),
    (-0.37, 0.5, 0.25),
    (2.0, 2.0, 0.01),
    (-4.0, 0.0, 3.0),
    (0.5, 3.0, 1.0),
]


def test_regression_view_matches_the_library(page: Any) -> None:
    rng = np.random.default_rng(200)
    page.click("#view-regression")
    assert page.is_visible("#reg-huber") and not page.is_visible("#ce-nats")
    assert not page.is_visible("#classes")
    for case in REGRESSION_CASES:
        r, beta, delta = set_regression(page, *case, rng)
        assert (r, beta, delta) == case
        shown = browser.outputs(page)
        names = ("l1", "l2", "smooth-l1", "huber")
        assert set(shown) == {f"reg-{g}{n}" for g in ("", "grad-") for n in names}
        assert check_all(shown, regression_reference(r, beta, delta)) == 8
        losses = regression_losses(beta, delta)
        for name, f in losses.items():
            kinks = {0.0} | ({beta} if name == "smooth-l1" else set())
            kinks |= {delta} if name == "huber" else set()
            if all(abs(abs(r) - k) > 1e-3 for k in kinks):  # differentiable here
                fd = (f(r + 1e-6) - f(r - 1e-6)) / 2e-6
                assert shown[f"reg-grad-{name}"][1] == pytest.approx(fd, abs=1e-6), name
        values = svg_series(page, "curve-regression")
        slopes = svg_series(page, "curve-regression-grad")
        assert set(values) == set(slopes) == set(losses)
        for name, f in losses.items():
            c = values[name]
            assert c["x"][0] == -4 and c["x"][-1] == 4 and len(c["x"]) == 201
            for i in (0, 37, 100, 163, 200):
                assert c["y"][i] == pytest.approx(f(c["x"][i]), rel=REL, abs=1e-13)
            # the marked points are the current residual's, the values in the table
            assert c["mx"] == r and c["my"] == shown[f"reg-{name}"][1]
            g = slopes[name]
            assert g["mx"] == r and g["my"] == shown[f"reg-grad-{name}"][1]
            grad = regression_reference(g["x"][150], beta, delta)[f"reg-grad-{name}"]
            assert g["y"][150] == pytest.approx(grad, rel=REL, abs=1e-13)


def test_regression_inputs_out_of_range(page: Any) -> None:
    """A number typed beyond a slider's range is held at its end (delta stays > 0)."""
    page.click("#view-regression")
    browser.set_value(page, "residual-value", "9")
    browser.set_value(page, "beta-value", "-1")
    browser.set_value(page, "delta-value", "0")
    assert [float(page.input_value(f"#{n}")) for n in ("residual", "beta", "delta")] == [
        4.0,
        0.0,
        0.01,
    ]
    check_all(browser.outputs(page), regression_reference(4.0, 0.0, 0.01))


# ------------------------------------------------------------------------------------------
# the languages
# ------------------------------------------------------------------------------------------

CJK = re.compile(r"[\u4e00-\u9fff]")
CYRILLIC = re.compile(r"[\u0400-\u04ff]")
HEADING = "Play with logits and residuals"


def words(page: Any) -> str:
    """All the text of the page (every view's, hidden or not; the curves' included) but the
    language switch, which names each language in its own."""
    text: str = page.evaluate(
        """() => {
            const body = document.body.cloneNode(true);
            for (const el of body.querySelectorAll(".languages, script")) el.remove();
            const labels = [...body.querySelectorAll("[aria-label]")]
                .map((el) => el.getAttribute("aria-label"));
            return body.textContent + " " + labels.join(" ") + " " + document.title;
        }"""
    )
    return text


def in_language(page: Any, lang: str) -> None:
    """The page speaks lang: its heading is the catalogue's, its words in its script."""
    catalogue = i18n.translations(lang, "explore")
    assert page.text_content("h1") == catalogue.gettext(HEADING)
    assert page.evaluate("document.documentElement.lang") == lang
    assert page.get_attribute(f"#lang-{lang}", "aria-pressed") == "true"
    text = words(page)
    assert bool(CJK.search(text)) == (lang == "zh")
    assert bool(CYRILLIC.search(text)) == (lang == "ru")
    english = ("cross entropy", "temperature", "residual", "derivative", "true class")
    assert all((w in text) == (lang == "en") for w in english), lang


def snapshot(page: Any) -> dict[str, Any]:
    """What the page shows that is not words: every visible number, every input's value,
    the curves' points, markers and tangents."""
    found: dict[str, Any] = page.evaluate(
        """() => ({
            inputs: [...document.querySelectorAll("input, select")]
                .map((el) => [el.id || el.name, el.value, el.checked]),
            curves: [...document.querySelectorAll(
                ".curves polyline, .curves circle, .curves line.tangent")]
                .map((el) => ["points", "cx", "cy", "data-x", "data-y", "data-slope"]
                    .map((a) => el.getAttribute(a))),
        })"""
    )
    found["outputs"] = browser.outputs(page)
    return found


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_every_view_in_each_language(
    chromium: Any, tmp_path: Path, artifacts: Path, lang: str
) -> None:
    """The page opened in each language: its words in that language, every view's numbers
    the library's, no error."""
    first = {"en": "softmax", "zh": "regression", "ru": "binary"}[lang]  # --view, each once
    path = write_page(tmp_path / "explore.html", [2.0, 1.0, 0.1], lang=lang, view=first)
    tab = browser.open_page(chromium, path.as_uri())
    in_language(tab, lang)
    assert tab.get_attribute("body", "data-view") == first
    opened = browser.outputs(tab)
    assert ("reg-huber" in opened, "ce-nats" in opened, "bce-sum" in opened) == (
        first == "regression",
        first == "softmax",
        first == "binary",
    )
    tab.click("#view-softmax")
    rng = np.random.default_rng(300)
    x = set_logits(tab, rng.uniform(-8, 8, 3), rng)
    t = set_temperature(tab, rng)
    assert check_all(browser.outputs(tab), softmax_reference(x, np.eye(3)[0], t)) == 15
    tab.click("#view-binary")
    assert check_all(browser.outputs(tab), sigmoid_reference(x, np.eye(3)[0], t)) == 18
    tab.click("#view-regression")
    r, beta, delta = set_regression(tab, -1.25, 0.75, 1.5, rng)
    assert check_all(browser.outputs(tab), regression_reference(r, beta, delta)) == 8
    in_language(tab, lang)
    tab.screenshot(path=str(artifacts / f"explore-regression-{lang}.png"), full_page=True)
    assert tab.requests == [path.as_uri()] and tab.problems == []
    tab.close()


def test_language_switch_changes_the_words_not_the_numbers(chromium: Any, page_url: str) -> None:
    tab = browser.open_page(chromium, page_url)
    # the script renders the static text as the Python side did: en -> ru -> en is the page
    # as written
    static = """() => [...document.querySelectorAll("[data-text], [data-label]")]
        .map((el) => [el.innerHTML, el.getAttribute("aria-label")])"""
    written = tab.evaluate(static)
    tab.click("#lang-ru")
    in_language(tab, "ru")
    assert tab.evaluate(static) != written
    tab.click("#lang-en")
    in_language(tab, "en")
    assert tab.evaluate(static) == written

    rng = np.random.default_rng(400)
    browser.set_value(tab, "classes", 4)
    x = set_logits(tab, rng.uniform(-8, 8, 4), rng)
    t = set_temperature(tab, rng)
    tab.click("#label-mode-soft")
    for i, v in enumerate((0.2, 0.0, 0.7, 0.1)):
        browser.set_value(tab, f"soft-{i}", f"{v:.2f}")
    tab.select_option("#curve-logit", "1")
    for view in ("softmax", "binary", "regression"):
        tab.click(f"#view-{view}")
        if view == "regression":
            set_regression(tab, 2.5, 1.25, 0.5, rng)
        before = snapshot(tab)
        assert len(before["outputs"]) >= 8 and len(before["curves"]) >= 2
        for lang in ("zh", "ru", "en"):
            tab.click(f"#lang-{lang}")
            in_language(tab, lang)
            assert snapshot(tab) == before, (view, lang)
    # and the numbers are still the library's
    tab.click("#view-softmax")
    y = np.array([0.2, 0.0, 0.7, 0.1])
    check_all(browser.outputs(tab), softmax_reference(x, y / y.sum(), t))
    assert tab.requests == [page_url] and tab.problems == []
    tab.close()


# ------------------------------------------------------------------------------------------
# the page's math beyond the sliders, and the page as the command serves it
# ------------------------------------------------------------------------------------------


def test_page_math_is_stable_at_extreme_logits(page: Any) -> None:
    """The page's formulas are the stable ones: at logits of ±1000 and ±800 (beyond the
    sliders) they give the library's finite answers, not inf or NaN."""
    x, y = [1000.0, -1000.0, 0.5], [0.0, 1.0, 0.0]
    r = page.evaluate("([x, y]) => crossentropyExplore.math.softmaxLosses(x, y, 1)", [x, y])
    ref = softmax_reference(np.array(x), np.array(y), 1.0)
    assert r["ce"] == pytest.approx(ref["ce-nats"], rel=REL) and r["ce"] == 2000.0
    np.testing.assert_allclose(r["gradCe"], ref["grad-ce"], rtol=REL, atol=1e-300)
    np.testing.assert_allclose(r["probs"], ref["p"], rtol=REL, atol=1e-300)
    x, y = [800.0, -800.0, 30.0, -30.0], [0.0, 0.0, 1.0, 1.0]
    r = page.evaluate("([x, y]) => crossentropyExplore.math.sigmoidLosses(x, y, 1)", [x, y])
    ref = sigmoid_reference(np.array(x), np.array(y), 1.0)
    np.testing.assert_allclose(r["bce"], ref["bce"], rtol=REL, atol=0)
    np.testing.assert_allclose(r["gradBce"], ref["grad-bce"], rtol=REL, atol=0)
    assert r["bce"][2] > 0  # 9.4e-14: log1p, not log(1 + tiny) = 0


def test_served_page_in_the_browser(chromium: Any, tmp_path: Path) -> None:
    """``crossentropy explore --serve``: the page a browser gets over HTTP works the same."""
    from test_explore import Served

    served = Served("--no-open", "--out", str(tmp_path / "p.html"), "--logits", "0.5,-1,2,0")
    try:
        url = served.url()
        tab = browser.open_page(chromium, url)
        x = set_logits(tab, np.array([1.25, -1.0, 2.0, 0.0]), np.random.default_rng(3))
        check_all(browser.outputs(tab), softmax_reference(x, np.eye(4)[0], 1.0))
        assert tab.requests == [url] and tab.problems == []
        tab.close()
    finally:
        code, _, err = served.stop()
    assert (code, err) == (0, "")


def test_screenshots(chromium: Any, tmp_path: Path, artifacts: Path) -> None:
    """Screenshots of both views, saved as test artifacts."""
    from PIL import Image

    path = write_page(tmp_path / "explore.html", [3.0, 1.0, -2.0, 0.5], label=2)
    tab = browser.open_page(chromium, path.as_uri())
    browser.set_value(tab, "temperature-value", "1.5")
    shots = [artifacts / "explore-softmax.png", artifacts / "explore-binary.png"]
    tab.screenshot(path=str(shots[0]), full_page=True)
    tab.click("#view-binary")
    tab.screenshot(path=str(shots[1]), full_page=True)
    assert tab.problems == []
    tab.close()
    for shot in shots:
        with Image.open(shot) as image:
            assert image.format == "PNG"
            assert image.width == browser.VIEWPORT["width"] and image.height >= 800
            # a drawn page, not a blank or error page: many colours (curves, bars, text)
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 200
