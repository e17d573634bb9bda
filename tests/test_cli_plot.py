"""Tests of :mod:`crossentropy.viz` and ``crossentropy plot``.

Every figure renders to PNG and SVG; the numbers drawn (read back from the figures' Line2D
objects) are the library's values and agree with independent float64 NumPy formulas and
finite differences; the command writes every figure and turns each bad input into one line on
stderr with exit status 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
pytest.importorskip("matplotlib")

from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.lines import Line2D
from typer.testing import CliRunner

import crossentropy as ce
from crossentropy import viz
from crossentropy.cli.app import app
from crossentropy.cli.plot import FIGURE_NAMES

TOL = {"rtol": 1e-12, "atol": 1e-12}
WIDE = {"COLUMNS": "120", "NO_COLOR": "1"}


def lines(fig: Figure) -> dict[str, Line2D]:
    """The figure's data lines, by gid."""
    found: dict[str, Line2D] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            gid = line.get_gid()
            if gid:
                assert gid not in found, gid
                found[gid] = line
    return found


def xy(line: Line2D) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    return np.asarray(line.get_xdata(), dtype=np.float64), np.asarray(
        line.get_ydata(), dtype=np.float64
    )


def some(n: int) -> np.ndarray[Any, Any]:
    """A few indices spread over a line of n points, both ends included."""
    return np.unique(np.linspace(0, n - 1, 7).round().astype(int))


@pytest.fixture(scope="module")
def figures() -> dict[str, Figure]:
    return {name: viz.make_figure(name) for name in viz.FIGURES}


# ------------------------------------------------------------------------------------------
# The registry and the figures' structure
# ------------------------------------------------------------------------------------------


def test_registry_matches_cli() -> None:
    assert tuple(viz.FIGURES) == FIGURE_NAMES


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_figure_is_labelled(figures: dict[str, Figure], name: str) -> None:
    fig = figures[name]
    assert fig.axes
    for ax in fig.axes:
        assert ax.get_title() or fig.get_suptitle()
        assert ax.get_xlabel() and ax.get_ylabel()
        legend = ax.get_legend()
        assert legend is not None and legend.get_texts()
        data = [ln for ln in ax.get_lines() if ln.get_gid()]
        assert data
        assert all(ln.get_linewidth() >= 2.0 for ln in data)
        labelled = {ln.get_label() for ln in data}
        assert {t.get_text() for t in legend.get_texts()} == labelled


def test_palette_is_okabe_ito(figures: dict[str, Figure]) -> None:
    allowed = {c.lower() for c in viz.PALETTE.values()}
    for fig in figures.values():
        for line in lines(fig).values():
            assert str(line.get_color()).lower() in allowed


def test_unknown_figure_name() -> None:
    with pytest.raises(ValueError, match="information"):
        viz.make_figure("nope")
    with pytest.raises(ValueError, match="format"):
        viz.save_figure(viz.make_figure("information"), "x.pdf", format="pdf")


# ------------------------------------------------------------------------------------------
# The numbers drawn
# ------------------------------------------------------------------------------------------


def test_information_values(figures: dict[str, Figure]) -> None:
    got = lines(figures["information"])
    for gid, base, log in (("bits", 2, np.log2), ("nats", None, np.log)):
        x, y = xy(got[gid])
        i = some(x.size)
        np.testing.assert_allclose(y[i], ce.information(x[i], base=base), **TOL)
        np.testing.assert_allclose(y[i], -log(x[i]), rtol=1e-12, atol=1e-15)
    x, y = xy(got["bits"])
    np.testing.assert_allclose(np.interp(0.5, x, y), 1.0, rtol=1e-3)


def test_binary_entropy_values(figures: dict[str, Figure]) -> None:
    got = lines(figures["binary-entropy"])
    for gid, base, log in (("bits", 2, np.log2), ("nats", None, np.log)):
        x, y = xy(got[gid])
        i = some(x.size)
        np.testing.assert_allclose(y[i], ce.binary_entropy(x[i], base=base), **TOL)
        inner = (x > 0) & (x < 1)
        ref = -x[inner] * log(x[inner]) - (1 - x[inner]) * log(1 - x[inner])
        np.testing.assert_allclose(y[inner], ref, rtol=1e-10, atol=1e-12)
        assert y[0] == 0.0 and y[-1] == 0.0
    _, bits = xy(got["bits"])
    assert bits.max() == pytest.approx(1.0)


def test_ce_vs_mse_probability_values(figures: dict[str, Figure]) -> None:
    got = lines(figures["ce-vs-mse-probability"])
    q, _ = xy(got["ce"])
    i = some(q.size)
    ones = np.ones_like(q[i])
    expected = {
        "ce": ce.binary_cross_entropy(q[i], ones, reduction="none"),
        "mse": ce.mse(q[i], ones, reduction="none"),
        "ce-grad": -1.0 / q[i],
        "mse-grad": 2.0 * (q[i] - 1.0),
    }
    np.testing.assert_allclose(expected["ce"], -np.log(q[i]), **TOL)
    np.testing.assert_allclose(expected["mse"], (1.0 - q[i]) ** 2, **TOL)
    for gid, want in expected.items():
        x, y = xy(got[gid])
        np.testing.assert_array_equal(x, q)
        np.testing.assert_allclose(y[i], want, **TOL)


def _finite_difference(f: Any, z: np.ndarray[Any, Any], h: float = 1e-6) -> Any:
    return (f(z + h) - f(z - h)) / (2 * h)


def test_ce_vs_mse_logit_values(figures: dict[str, Figure]) -> None:
    got = lines(figures["ce-vs-mse-logit"])
    z, _ = xy(got["sigmoid-ce"])
    z = z[some(z.size)]
    ones = np.ones_like(z)

    def sig_ce(v: Any) -> Any:
        return ce.sigmoid_cross_entropy(v, np.ones_like(v), reduction="none")

    def sig_mse(v: Any) -> Any:
        return ce.mse(ce.sigmoid(v), np.ones_like(v), reduction="none")

    def three(v: Any) -> Any:
        return np.stack([v, np.zeros_like(v), np.zeros_like(v)], axis=-1)

    def soft_ce(v: Any) -> Any:
        return ce.sparse_softmax_cross_entropy(
            three(v), np.zeros(v.shape, dtype=np.int64), reduction="none"
        )

    def soft_mse(v: Any) -> Any:
        onehot = np.zeros((v.size, 3))
        onehot[:, 0] = 1.0
        return ce.mse(ce.softmax(three(v)), onehot, reduction="none").sum(axis=-1)

    np.testing.assert_allclose(sig_ce(z), np.logaddexp(0.0, -z), **TOL)
    np.testing.assert_allclose(sig_mse(z), (1 / (1 + np.exp(-z)) - 1) ** 2, **TOL)
    expected = {
        "sigmoid-ce": sig_ce(z),
        "sigmoid-mse": sig_mse(z),
        "softmax-ce": soft_ce(z),
        "softmax-mse": soft_mse(z),
    }
    for gid, want in expected.items():
        x, y = xy(got[gid])
        np.testing.assert_allclose(np.interp(z, x, y), want, **TOL)
    for name, f in (
        ("sigmoid-ce", sig_ce),
        ("sigmoid-mse", sig_mse),
        ("softmax-ce", soft_ce),
        ("softmax-mse", soft_mse),
    ):
        x, y = xy(got[f"{name}-grad"])
        np.testing.assert_allclose(np.interp(z, x, y), _finite_difference(f, z), atol=1e-7)
    np.testing.assert_allclose(
        np.interp(z, *xy(got["sigmoid-ce-grad"])), 1 / (1 + np.exp(-z)) - ones, **TOL
    )


def test_ce_vs_mse_logit_annotates_saturation_and_nonconvexity(
    figures: dict[str, Figure],
) -> None:
    fig = figures["ce-vs-mse-logit"]
    assert len(fig.axes) == 4
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "saturated" in texts and "concave" in texts and "not convex" in texts
    for ax in fig.axes:
        assert ax.patches, "each panel shades a region"  # axvspan rectangles
    got = lines(fig)
    for row in ("sigmoid", "softmax"):
        z, g_mse = xy(got[f"{row}-mse-grad"])
        _, g_ce = xy(got[f"{row}-ce-grad"])
        wrong = z < -6  # the true class has p < 0.01 there
        assert np.all(np.abs(g_mse[wrong]) < 0.01)  # MSE: saturated, learns slowly
        assert np.all(g_ce[wrong] < -0.99)  # CE: still pushes with slope ~ -1
        _, mse = xy(got[f"{row}-mse"])
        curvature = np.gradient(np.gradient(mse, z), z)
        assert curvature.min() < 0 < curvature.max()  # MSE in z is not convex
        _, ce_loss = xy(got[f"{row}-ce"])
        assert np.gradient(np.gradient(ce_loss, z), z).min() > -1e-6  # CE is convex


def test_regression_losses_values(figures: dict[str, Figure]) -> None:
    got = lines(figures["regression-losses"])
    d, _ = xy(got["l2"])
    i = some(d.size)
    x = d[i]
    zero = np.zeros_like(x)
    expected = {
        "l2": ce.mse(x, zero, reduction="none"),
        "l1": ce.l1(x, zero, reduction="none"),
        "smooth-l1": ce.smooth_l1(x, zero, beta=1.0, reduction="none"),
        "huber": ce.huber(x, zero, delta=2.0, reduction="none"),
        "l2-grad": 2 * x,
        "l1-grad": np.sign(x),
        "smooth-l1-grad": np.clip(x, -1.0, 1.0),
        "huber-grad": np.clip(x, -2.0, 2.0),
    }
    np.testing.assert_allclose(expected["l2"], x**2, **TOL)
    np.testing.assert_allclose(expected["l1"], np.abs(x), **TOL)
    ref_sl1 = np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5)
    np.testing.assert_allclose(expected["smooth-l1"], ref_sl1, **TOL)
    ref_huber = np.where(np.abs(x) < 2, 0.5 * x**2, 2 * (np.abs(x) - 1.0))
    np.testing.assert_allclose(expected["huber"], ref_huber, **TOL)
    for gid, want in expected.items():
        xs, y = xy(got[gid])
        np.testing.assert_array_equal(xs, d)
        np.testing.assert_allclose(y[i], want, **TOL)


def test_softmax_temperature_values(figures: dict[str, Figure]) -> None:
    from crossentropy.viz.figures import SOFTMAX_LOGITS, SOFTMAX_TEMPERATURES

    got = lines(figures["softmax-temperature"])
    logits = np.asarray(SOFTMAX_LOGITS)
    for t in SOFTMAX_TEMPERATURES:
        x, y = xy(got[f"T={t:g}"])
        np.testing.assert_array_equal(x, np.arange(logits.size))
        np.testing.assert_allclose(y, ce.softmax(logits / t), **TOL)
        ref = np.exp(logits / t - np.max(logits / t))
        np.testing.assert_allclose(y, ref / ref.sum(), rtol=1e-12)
    for c in range(logits.size):
        temps, y = xy(got[f"class-{c}"])
        i = some(temps.size)
        want = [float(ce.softmax(logits / t)[c]) for t in temps[i]]
        np.testing.assert_allclose(y[i], want, **TOL)
    _, top = xy(got["class-0"])
    assert top[0] > 0.999 and abs(top[-1] - 0.2) < 0.02  # argmax at T -> 0, uniform at T -> inf


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_png_renders(tmp_path: Path, name: str) -> None:
    fig = viz.make_figure(name)
    path = viz.save_figure(fig, tmp_path / f"{name}.png")
    assert path.is_file() and 10_000 < path.stat().st_size < 200_000
    image = imread(path)
    width, height = fig.get_size_inches() * fig.dpi
    assert image.shape[:2] == (round(height), round(width))
    assert image.shape[0] >= 600 and image.shape[1] >= 1000
    assert float(np.std(image[..., :3])) > 0.05  # not blank


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_svg_renders(tmp_path: Path, name: str) -> None:
    path = viz.save_figure(viz.make_figure(name), tmp_path / f"{name}.svg", format="svg")
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size > 20_000
    assert "<svg" in text and "</svg>" in text


def test_no_pyplot_no_global_state() -> None:
    code = (
        "import sys, matplotlib\n"
        "before = dict(matplotlib.rcParams)\n"
        "from crossentropy import viz\n"
        "figs = [viz.make_figure(n, lang=lang) for n in viz.FIGURES for lang in ('en', 'ru')]\n"
        "try:\n"
        "    figs.append(viz.make_figure('information', lang='zh'))\n"
        "except viz.MissingFontError:\n"
        "    pass\n"
        "for fig in figs:\n"
        "    fig.canvas.draw()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "assert dict(matplotlib.rcParams) == before\n"
    )
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["plot", *args], env=WIDE)


@pytest.mark.parametrize("args", [[], ["all"]])
def test_cli_writes_every_figure(tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "new" / "figs"
    result = invoke(*args, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    written = result.stdout.splitlines()
    assert written == [str(out / f"{n}.png") for n in FIGURE_NAMES]
    for path in written:
        assert Path(path).stat().st_size > 10_000


def test_cli_selected_figures_svg(tmp_path: Path) -> None:
    result = invoke(
        "binary-entropy", "information", "binary-entropy", "-o", str(tmp_path), "-f", "svg"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        str(tmp_path / "binary-entropy.svg"),
        str(tmp_path / "information.svg"),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["binary-entropy.svg", "information.svg"]


def _one_line_exit_2(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.output
    err_lines = result.stderr.splitlines()
    assert len(err_lines) == 1, result.stderr
    assert err_lines[0].startswith("crossentropy") and "error:" in err_lines[0]
    return str(err_lines[0])


def test_cli_unknown_figure_lists_valid(tmp_path: Path) -> None:
    line = _one_line_exit_2(invoke("informatio", "--out", str(tmp_path)))
    assert "informatio" in line
    for name in ("all", *FIGURE_NAMES):
        assert name in line
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ["--format", "jpg", "--out", "x"],
        ["information"],  # no --out
        ["--out"],
        ["--bogus", "--out", "x"],
        ["--lang", "fr", "--out", "x"],
        ["--lang", "--out", "x"],
    ],
)
def test_cli_bad_options(args: list[str]) -> None:
    _one_line_exit_2(invoke(*args))


def test_cli_out_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    line = _one_line_exit_2(invoke("information", "--out", str(blocker)))
    assert "--out" in line and "not a directory" in line


def test_cli_out_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    line = _one_line_exit_2(invoke("information", "--out", str(blocker / "sub")))
    assert "cannot create" in line and "--out" in line


def test_cli_out_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "information.png").mkdir()  # a directory where the file should go
    line = _one_line_exit_2(invoke("information", "--out", str(tmp_path)))
    assert "cannot write" in line and "information.png" in line


def test_cli_missing_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for module in [m for m in sys.modules if m.startswith("crossentropy.viz")]:
        monkeypatch.delitem(sys.modules, module)
    line = _one_line_exit_2(invoke("--out", str(tmp_path)))
    assert "matplotlib" in line and "pip install crossentropy[plot]" in line
    assert not any(tmp_path.iterdir())


def test_svg_is_reproducible(tmp_path: Path) -> None:
    """The same figure saved twice as SVG gives the same bytes (fixed id salt, no date)."""
    first = viz.save_figure(
        viz.make_figure("softmax-temperature"), tmp_path / "a.svg", format="svg"
    )
    second = viz.save_figure(
        viz.make_figure("softmax-temperature"), tmp_path / "b.svg", format="svg"
    )
    assert first.read_bytes() == second.read_bytes()
