"use strict";
// crossentropy explore: the page's behaviour. Inlined into the HTML by crossentropy.explore;
// no network, no libraries. Every number shown comes from `math` below, which writes the
// formulas of the Python library (crossentropy._array, .losses, .gradients) once more, in
// float64 like the library's NumPy oracle; the browser tests compare the two. Every word it
// shows is a message, marked _(message), translated from the catalogues the page embeds (the
// `explore` gettext domain); numbers and formulas are never part of a message.
(function () {
  // ------------------------------------------------------------------------------------------
  // the math
  // ------------------------------------------------------------------------------------------
  const math = (function () {
    function sum(values) {
      let s = 0;
      for (const v of values) s += v;
      return s;
    }

    // max(z), or 0 when it is not finite (crossentropy._array._safe_max)
    function safeMax(z) {
      const m = Math.max.apply(null, z);
      return Number.isFinite(m) ? m : 0;
    }

    // log softmax(z)_i = (z_i - m) - log sum_j e^(z_j - m): every exponent <= 0, and the two
    // parts are kept apart rather than added (m + log s would round to the spacing of m)
    function logSoftmax(z) {
      const m = safeMax(z);
      const logSum = Math.log(sum(z.map((v) => Math.exp(v - m))));
      return z.map((v) => v - m - logSum);
    }

    function softmax(z) {
      const m = safeMax(z);
      const e = z.map((v) => Math.exp(v - m));
      const s = sum(e);
      return e.map((v) => v / s);
    }

    // sigmoid without overflow: e^x / (1 + e^x) below zero, 1 / (1 + e^-x) above
    function sigmoid(x) {
      const e = Math.exp(-Math.abs(x));
      return x >= 0 ? 1 / (1 + e) : e / (1 + e);
    }

    // softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|)
    function softplus(x) {
      return Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));
    }

    // coefficient * value, 0 wherever the coefficient is 0 (0 log 0 = 0)
    function times(coefficient, value) {
      return coefficient === 0 ? 0 : coefficient * value;
    }

    // z = x / T: the temperature divides the logits, so d/dx = (1/T) d/dz
    function scaled(logits, temperature) {
      return logits.map((v) => v / temperature);
    }

    // softmax cross entropy with labels y (one-hot or soft), and MSE on the probabilities
    // (the Brier score, sum over classes), both with their gradients wrt the logits x:
    //   CE  = -sum_c y_c log p_c                    dCE/dx_j  = (p_j sum_c y_c - y_j) / T
    //   MSE = sum_c (p_c - y_c)^2, g = 2 (p - y)    dMSE/dx_j = p_j (g_j - sum_c g_c p_c) / T
    function softmaxLosses(logits, labels, temperature) {
      const z = scaled(logits, temperature);
      const logProbs = logSoftmax(z);
      const probs = logProbs.map(Math.exp);
      const mass = sum(labels);
      const ce = -sum(labels.map((y, c) => times(y, logProbs[c])));
      const gradCe = probs.map((p, j) => (mass * p - labels[j]) / temperature);
      const shown = softmax(z);
      const g = shown.map((p, c) => 2 * (p - labels[c]));
      const gp = sum(g.map((v, c) => v * shown[c]));
      const mse = sum(shown.map((p, c) => (p - labels[c]) * (p - labels[c])));
      const gradMse = shown.map((p, j) => (p * (g[j] - gp)) / temperature);
      return {
        z: z,
        probs: shown,
        logProbs: logProbs,
        ce: ce,
        ceBits: ce / Math.LN2,
        gradCe: gradCe,
        mse: mse,
        gradMse: gradMse,
      };
    }

    // sigmoid (binary, multi-label) cross entropy per class, and the squared error on the
    // sigmoid, with their gradients wrt each logit x_c:
    //   BCE_c = y softplus(-z) + (1 - y) softplus(z)   dBCE_c/dx_c = (s (y + 1 - y) - y) / T
    //   SE_c  = (s - y)^2                              dSE_c/dx_c  = 2 (s - y) s (1 - s) / T
    function sigmoidLosses(logits, targets, temperature) {
      const z = scaled(logits, temperature);
      const probs = z.map(sigmoid);
      const bce = z.map((v, c) => {
        const y = targets[c];
        return times(y, softplus(-v)) + times(1 - y, softplus(v));
      });
      const gradBce = probs.map((s, c) => {
        const y = targets[c];
        return (s * (y + 1 - y) - y) / temperature;
      });
      const se = probs.map((s, c) => (s - targets[c]) * (s - targets[c]));
      const gradSe = probs.map((s, c) => (2 * (s - targets[c]) * s * (1 - s)) / temperature);
      const bceSum = sum(bce);
      return {
        z: z,
        probs: probs,
        bce: bce,
        bceSum: bceSum,
        bceBits: bceSum / Math.LN2,
        gradBce: gradBce,
        se: se,
        seSum: sum(se),
        gradSe: gradSe,
      };
    }

    // the regression losses of a residual r = x - t (crossentropy.losses: _L1, _Mse,
    // _SmoothL1, _Huber), each with its derivative in r, which is the one in the prediction x:
    //   L1 = |r|                                              dL1/dr = sign(r) (0 at r = 0)
    //   L2 = r^2                                              dL2/dr = 2 r
    //   smooth L1 = 0.5 r^2 / beta inside |r| < beta,          r / beta inside,
    //               |r| - 0.5 beta outside (L1 at beta = 0)    sign(r) outside
    //   Huber = 0.5 r^2 inside |r| < delta,                   r inside,
    //           delta (|r| - 0.5 delta) outside               delta sign(r) outside
    // (Huber with delta is delta times smooth L1 with beta = delta)
    function regressionLosses(r, beta, delta) {
      const a = Math.abs(r);
      const sign = Math.sign(r);
      return {
        l1: a,
        gradL1: sign,
        l2: r * r,
        gradL2: 2 * r,
        smoothL1: a < beta ? 0.5 * r * r * (beta > 0 ? 1 / beta : 0) : a - 0.5 * beta,
        gradSmoothL1: a < beta ? r / (beta > 0 ? beta : 1) : sign,
        huber: a < delta ? 0.5 * r * r : (a - 0.5 * delta) * delta,
        gradHuber: a < delta ? r : delta * sign,
      };
    }

    return {
      sum: sum,
      logSoftmax: logSoftmax,
      softmax: softmax,
      sigmoid: sigmoid,
      softplus: softplus,
      softmaxLosses: softmaxLosses,
      sigmoidLosses: sigmoidLosses,
      regressionLosses: regressionLosses,
    };
  })();

  // ------------------------------------------------------------------------------------------
  // the state: what the person set
  // ------------------------------------------------------------------------------------------
  const config = JSON.parse(document.getElementById("explore-config").textContent);
  const LIMITS = config.limits;
  const state = {
    view: config.view,
    logits: config.logits.slice(),
    temperature: config.temperature,
    labelMode: "class",
    trueClass: config.label,
    soft: config.logits.map((unused, i) => (i === config.label ? 1 : 0)),
    targets: config.logits.map((unused, i) => (i === config.label ? 1 : 0)),
    curve: "label",
    residual: config.regression.residual,
    beta: config.regression.beta,
    delta: config.regression.delta,
    lang: config.lang,
  };

  // ------------------------------------------------------------------------------------------
  // the words: the messages of the `explore` domain in the language chosen
  // ------------------------------------------------------------------------------------------

  // the message in the current language (itself in English, or where it has no translation)
  function _(message) {
    const catalogue = config.catalogues[state.lang] || {};
    return catalogue[message] || message;
  }

  // (a RegExp from a string: Babel's javascript extractor misreads regex literals with < or >)
  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" };
  const SPECIAL = new RegExp('[&<>"]', "g");
  function escapeHtml(text) {
    return String(text).replace(SPECIAL, (c) => ESCAPES[c]);
  }

  // a translated message as text, each {field} replaced by fields[field] (text: a number)
  function format(translated, fields) {
    return translated.replace(/\{(\w+)\}/g, (m, name) =>
      name in fields ? String(fields[name]) : m
    );
  }

  // a translated message as HTML: its text escaped, each {field} replaced by fields[field]
  // (HTML: a formula, a number), as the Python side renders the static text
  function fill(translated, fields) {
    return escapeHtml(translated).replace(/\{(\w+)\}/g, (m, name) =>
      name in fields ? String(fields[name]) : m
    );
  }

  // the page's static text (the elements marked data-text and data-label) in the current
  // language, from the same messages and markup the Python side rendered it with
  function relabel() {
    for (const el of document.querySelectorAll("[data-text]")) {
      el.innerHTML = fill(_(config.text[el.dataset.text]), config.markup);
    }
    for (const el of document.querySelectorAll("[data-label]")) {
      el.setAttribute("aria-label", _(config.text[el.dataset.label]));
    }
    markLanguage();
  }

  function markLanguage() {
    document.documentElement.lang = state.lang;
    for (const button of document.querySelectorAll("button[data-lang]")) {
      button.setAttribute("aria-pressed", String(button.dataset.lang === state.lang));
    }
  }

  // the labels y of the softmax view: one-hot, or the soft weights normalised to sum to 1
  // (all weights 0: the uniform distribution)
  function softmaxLabels() {
    const n = state.logits.length;
    if (state.labelMode === "class") {
      return state.logits.map((unused, i) => (i === state.trueClass ? 1 : 0));
    }
    const total = math.sum(state.soft);
    return state.soft.map((w) => (total > 0 ? w / total : 1 / n));
  }

  function curveIndex() {
    return state.curve === "label" ? state.trueClass : Number(state.curve);
  }

  function setClassCount(n) {
    n = Math.max(LIMITS.minClasses, Math.min(LIMITS.maxClasses, Math.round(n)));
    while (state.logits.length < n) {
      state.logits.push(0);
      state.soft.push(0);
      state.targets.push(0);
    }
    state.logits.length = n;
    state.soft.length = n;
    state.targets.length = n;
    if (state.trueClass >= n) state.trueClass = n - 1;
    if (state.curve !== "label" && Number(state.curve) >= n) state.curve = "label";
  }

  // ------------------------------------------------------------------------------------------
  // drawing
  // ------------------------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);

  function fmt(v) {
    if (Number.isNaN(v)) return "NaN";
    if (v === Infinity) return "\u221e";
    if (v === -Infinity) return "-\u221e";
    if (Math.abs(v) < 5e-5) return "0.0000";
    return v.toFixed(4);
  }

  function show(id, value) {
    const el = $(id);
    el.textContent = fmt(value);
    el.dataset.value = String(value);
  }

  function bar(id, p) {
    $(id).style.width = (100 * Math.max(0, Math.min(1, p))).toFixed(2) + "%";
  }

  function sub(name, i) {
    return name + "<sub>" + i + "</sub>";
  }

  function logitCell(i) {
    const v = state.logits[i];
    const id = "logit-" + i;
    return (
      '<td class="logit"><input type="range" id="' + id + '" min="' + -LIMITS.logit +
      '" max="' + LIMITS.logit + '" step="0.01" value="' + v + '" aria-label="' +
      fill(_("logit {i}"), { i: i }) + '"><input type="number" id="' + id + '-value" min="' +
      -LIMITS.logit + '" max="' + LIMITS.logit + '" step="0.01" value="' + v +
      '" aria-label="' + fill(_("logit {i}, its value"), { i: i }) + '"></td>'
    );
  }

  function out(id, extra) {
    return '<td class="num' + (extra || "") + '"><output id="' + id + '"></output></td>';
  }

  function probCell(prefix, i) {
    return (
      '<td class="prob"><span class="bar"><span id="' + prefix + "-" + i +
      '-bar"></span></span><output id="' + prefix + "-" + i + '"></output></td>'
    );
  }

  // which parts of the page the view shows
  function showView() {
    const shown = {
      "softmax-only": state.view === "softmax",
      "binary-only": state.view === "binary",
      "regression-only": state.view === "regression",
      "logits-only": state.view !== "regression",
    };
    for (const [name, visible] of Object.entries(shown)) {
      for (const el of document.querySelectorAll("." + name)) el.hidden = !visible;
    }
    for (const tab of document.querySelectorAll("button[data-tab]")) {
      tab.setAttribute("aria-selected", String(tab.dataset.tab === state.view));
    }
    document.body.dataset.view = state.view;
  }

  function buildTable() {
    const n = state.logits.length;
    const head = $("class-head");
    const rows = $("class-rows");
    const foot = $("class-foot");
    const xi = sub("x", "i");
    let html = "";
    if (state.view === "softmax") {
      head.innerHTML =
        "<tr><th>" + fill(_("class"), {}) + "</th><th>" + fill(_("logit {x}"), { x: xi }) +
        "</th><th>" + fill(_("label {y}"), { y: sub("y", "i") }) + "</th><th>" +
        fill(_("softmax {p}"), { p: sub("p", "i") }) + "</th><th>\u2202CE/\u2202" + xi +
        "</th><th>\u2202MSE/\u2202" + xi + "</th></tr>";
      for (let i = 0; i < n; i++) {
        const label =
          state.labelMode === "class"
            ? '<input type="radio" name="true-class" id="true-class-' + i + '" value="' + i +
              '"' + (i === state.trueClass ? " checked" : "") + ' aria-label="' +
              fill(_("true class {i}"), { i: i }) + '">'
            : '<input type="range" id="soft-' + i + '" min="0" max="1" step="0.01" value="' +
              state.soft[i] + '" aria-label="' + fill(_("soft label weight {i}"), { i: i }) +
              '">';
        html +=
          '<tr data-class="' + i + '"><th scope="row">' + i + "</th>" + logitCell(i) +
          '<td class="label">' + label + ' <output id="y-' + i + '"></output></td>' +
          probCell("p", i) + out("grad-ce-" + i) + out("grad-mse-" + i) + "</tr>";
      }
      foot.innerHTML =
        '<tr><th colspan="3">' + fill(_("sum"), {}) + "</th>" + out("p-sum") +
        out("grad-ce-sum") + out("grad-mse-sum") + "</tr>";
    } else {
      head.innerHTML =
        "<tr><th>" + fill(_("class"), {}) + "</th><th>" + fill(_("logit {x}"), { x: xi }) +
        "</th><th>" + fill(_("target {y}"), { y: sub("y", "i") }) + "</th><th>" +
        fill(_("sigmoid {s}"), { s: sub("s", "i") }) + "</th><th>BCE<sub>i</sub></th>" +
        "<th>\u2202BCE/\u2202" + xi + "</th><th>SE<sub>i</sub></th>" +
        "<th>\u2202SE/\u2202" + xi + "</th></tr>";
      for (let i = 0; i < n; i++) {
        html +=
          '<tr data-class="' + i + '"><th scope="row">' + i + "</th>" + logitCell(i) +
          '<td class="label"><input type="checkbox" id="target-' + i + '"' +
          (state.targets[i] ? " checked" : "") + ' aria-label="' +
          fill(_("target {i}"), { i: i }) + '"></td>' + probCell("sigmoid", i) +
          out("bce-" + i) + out("grad-bce-" + i) + out("se-" + i) + out("grad-se-" + i) +
          "</tr>";
      }
      foot.innerHTML =
        '<tr><th colspan="4">' + fill(_("sum"), {}) + "</th>" + out("bce-sum") + "<td></td>" +
        out("se-sum") + "<td></td></tr>";
    }
    rows.innerHTML = html;
    const select = $("curve-logit");
    const x = "x" + state.trueClass;
    let options =
      '<option value="label">' +
      (state.view === "binary" ? x : fill(_("the true class, {x}"), { x: x })) + "</option>";
    for (let i = 0; i < n; i++) options += '<option value="' + i + '">x' + i + "</option>";
    select.innerHTML = options;
    select.value = state.curve;
    $("classes").value = String(n);
    $("label-mode-class").checked = state.labelMode === "class";
    $("label-mode-soft").checked = state.labelMode === "soft";
  }

  // the regression view's table: one row per loss, its value and its derivative at r
  const REGRESSION = [
    { id: "l1", value: "l1", grad: "gradL1" },
    { id: "l2", value: "l2", grad: "gradL2" },
    { id: "smooth-l1", value: "smoothL1", grad: "gradSmoothL1" },
    { id: "huber", value: "huber", grad: "gradHuber" },
  ];

  // the losses' names: L1 and L2 are formulas (the same in every language), the others
  // words, with their parameter
  function regressionName(id) {
    if (id === "l1") return "L1";
    if (id === "l2") return "L2 (MSE)";
    if (id === "smooth-l1") {
      return fill(_("smooth L1, {beta}"), { beta: "<i>\u03b2</i> = " + state.beta });
    }
    return fill(_("Huber, {delta}"), { delta: "<i>\u03b4</i> = " + state.delta });
  }

  function buildRegression() {
    $("regression-head").innerHTML =
      "<tr><th>" + fill(_("loss"), {}) + "</th><th>" +
      fill(_("value at {r}"), { r: "<i>r</i>" }) + "</th><th>" +
      fill(_("derivative {d}"), { d: "d/d<i>r</i>" }) + "</th></tr>";
    let html = "";
    for (const loss of REGRESSION) {
      html +=
        '<tr data-loss="' + loss.id + '"><th scope="row" id="reg-name-' + loss.id +
        '"></th>' + out("reg-" + loss.id) + out("reg-grad-" + loss.id) + "</tr>";
    }
    $("regression-rows").innerHTML = html;
  }

  function update() {
    if (state.view === "regression") {
      updateRegression();
      return;
    }
    const n = state.logits.length;
    const t = state.temperature;
    let curves;
    if (state.view === "softmax") {
      const y = softmaxLabels();
      const r = math.softmaxLosses(state.logits, y, t);
      for (let i = 0; i < n; i++) {
        show("y-" + i, y[i]);
        show("p-" + i, r.probs[i]);
        bar("p-" + i + "-bar", r.probs[i]);
        show("grad-ce-" + i, r.gradCe[i]);
        show("grad-mse-" + i, r.gradMse[i]);
      }
      show("p-sum", math.sum(r.probs));
      show("grad-ce-sum", math.sum(r.gradCe));
      show("grad-mse-sum", math.sum(r.gradMse));
      show("ce-nats", r.ce);
      show("ce-bits", r.ceBits);
      show("mse", r.mse);
      const k = curveIndex();
      curves = [
        {
          id: "curve-ce",
          title: _("cross entropy (nats)"),
          loss: (x) => math.softmaxLosses(x, y, t).ce,
          grad: (x) => math.softmaxLosses(x, y, t).gradCe[k],
        },
        {
          id: "curve-mse",
          title: _("MSE on the probabilities"),
          loss: (x) => math.softmaxLosses(x, y, t).mse,
          grad: (x) => math.softmaxLosses(x, y, t).gradMse[k],
        },
      ];
    } else {
      const y = state.targets;
      const r = math.sigmoidLosses(state.logits, y, t);
      for (let i = 0; i < n; i++) {
        show("sigmoid-" + i, r.probs[i]);
        bar("sigmoid-" + i + "-bar", r.probs[i]);
        show("bce-" + i, r.bce[i]);
        show("grad-bce-" + i, r.gradBce[i]);
        show("se-" + i, r.se[i]);
        show("grad-se-" + i, r.gradSe[i]);
      }
      show("bce-sum", r.bceSum);
      show("bce-sum-total", r.bceSum);
      show("bce-bits", r.bceBits);
      show("se-sum", r.seSum);
      show("se-sum-total", r.seSum);
      const k = curveIndex();
      curves = [
        {
          id: "curve-ce",
          title: format(_("binary cross entropy of class {k} (nats)"), { k: k }),
          loss: (x) => math.sigmoidLosses(x, y, t).bce[k],
          grad: (x) => math.sigmoidLosses(x, y, t).gradBce[k],
        },
        {
          id: "curve-mse",
          title: format(_("squared error of class {k}"), { k: k }),
          loss: (x) => math.sigmoidLosses(x, y, t).se[k],
          grad: (x) => math.sigmoidLosses(x, y, t).gradSe[k],
        },
      ];
    }
    $("temperature-shown").textContent = String(t);
    const k = curveIndex();
    for (const el of document.querySelectorAll(".curve-k")) el.textContent = String(k);
    drawCurve($("curve-left"), curves[0], k);
    drawCurve($("curve-right"), curves[1], k);
  }

  function updateRegression() {
    const r = state.residual;
    const values = math.regressionLosses(r, state.beta, state.delta);
    for (const loss of REGRESSION) {
      $("reg-name-" + loss.id).innerHTML = regressionName(loss.id);
      show("reg-" + loss.id, values[loss.value]);
      show("reg-grad-" + loss.id, values[loss.grad]);
    }
    const lim = LIMITS.residual;
    const xs = [];
    for (let j = 0; j < CURVE_POINTS; j++) xs.push(-lim + (2 * lim * j) / (CURVE_POINTS - 1));
    const at = xs.map((x) => math.regressionLosses(x, state.beta, state.delta));
    const axis = format(_("residual {r}"), { r: "r" });
    const series = (key) =>
      REGRESSION.map((loss) => ({
        name: loss.id,
        label: loss.id === "l1" ? "L1" : loss.id === "l2" ? "L2" : regressionLabel(loss.id),
        ys: at.map((v) => v[loss[key]]),
        x0: r,
        y0: values[loss[key]],
      }));
    drawPlot($("curve-left"), {
      id: "curve-regression",
      title: _("the four losses"),
      axis: axis,
      lim: lim,
      xs: xs,
      series: series("value"),
      legend: 0.5,
    });
    drawPlot($("curve-right"), {
      id: "curve-regression-grad",
      title: _("their derivatives"),
      axis: axis,
      lim: lim,
      xs: xs,
      series: series("grad"),
      legend: 0.02,
    });
  }

  // a loss's name on the curves' legend (SVG text: no markup)
  function regressionLabel(id) {
    return id === "smooth-l1" ? _("smooth L1") : _("Huber");
  }

  // ------------------------------------------------------------------------------------------
  // the loss curves: the loss as a function of one logit x_k, the others held where they are
  // ------------------------------------------------------------------------------------------
  const CURVE_POINTS = 201;
  const W = 440;
  const H = 250;
  const PAD = { left: 52, right: 14, top: 28, bottom: 38 };

  function niceStep(span) {
    const raw = span / 5;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  function tickLabel(v, step) {
    const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    return v.toFixed(Math.min(digits, 6));
  }

  // the loss as a function of logit x_k, its current point and tangent
  function drawCurve(holder, spec, k) {
    const lim = LIMITS.logit;
    const xs = [];
    const ys = [];
    const at = state.logits.slice();
    for (let j = 0; j < CURVE_POINTS; j++) {
      const x = -lim + (2 * lim * j) / (CURVE_POINTS - 1);
      at[k] = x;
      xs.push(x);
      ys.push(spec.loss(at));
    }
    const x0 = state.logits[k];
    drawPlot(holder, {
      id: spec.id,
      title: spec.title,
      ariaLabel: format(_("{title} against {x}"), { title: spec.title, x: "x" + k }),
      axis: format(_("logit {x} (the other logits fixed)"), { x: "x" + k }),
      lim: lim,
      xs: xs,
      series: [{ ys: ys, x0: x0, y0: spec.loss(state.logits), slope: spec.grad(state.logits) }],
      shade: true,
    });
  }

  // A plot over [-lim, lim]: each series a polyline (its values in data-x/data-y) with its
  // current point marked (a circle, its values in data-x/data-y) and, given a slope, the
  // tangent there (dashed); shade: the concave parts shaded; legend: where the series' names
  // go (a fraction of the width), when there are several. Titles and labels are escaped.
  function drawPlot(holder, plot) {
    const lim = plot.lim;
    const xs = plot.xs;
    const finite = [];
    for (const s of plot.series) {
      finite.push(s.y0);
      for (const y of s.ys) if (Number.isFinite(y)) finite.push(y);
    }
    let top = Math.max(0, Math.max.apply(null, finite));
    let bottom = Math.min(0, Math.min.apply(null, finite));
    if (!(top > bottom)) top = bottom + 1;
    const span = top - bottom;
    top += 0.05 * span * (top > 0 ? 1 : 0);
    bottom -= 0.05 * span * (bottom < 0 ? 1 : 0);
    const px = (x) => PAD.left + ((x + lim) / (2 * lim)) * (W - PAD.left - PAD.right);
    const py = (y) => H - PAD.bottom - ((y - bottom) / (top - bottom)) * (H - PAD.top - PAD.bottom);
    const clampY = (y) => Math.max(PAD.top, Math.min(H - PAD.bottom, y));
    let svg =
      '<svg id="' + plot.id + '" class="curve" viewBox="0 0 ' + W + " " + H +
      '" role="img" aria-label="' + escapeHtml(plot.ariaLabel || plot.title) + '">';
    // where a curve is concave (second difference < 0): shaded, like `crossentropy plot`
    const h = xs[1] - xs[0];
    const tol = 1e-9 * (top - bottom);
    let concave = 0;
    for (const s of plot.shade ? plot.series : []) {
      for (let j = 1; j < CURVE_POINTS - 1; j++) {
        if (s.ys[j + 1] - 2 * s.ys[j] + s.ys[j - 1] < -tol * h * h) {
          concave += 1;
          svg +=
            '<rect class="concave" x="' + (px(xs[j]) - (px(h) - px(0)) / 2).toFixed(2) +
            '" y="' + PAD.top + '" width="' + (px(h) - px(0)).toFixed(2) + '" height="' +
            (H - PAD.top - PAD.bottom) + '"></rect>';
        }
      }
    }
    // axes and ticks
    const ystep = niceStep(top - bottom);
    for (let v = Math.ceil(bottom / ystep - 1e-9) * ystep; v <= top + 1e-12; v += ystep) {
      svg +=
        '<line class="grid" x1="' + PAD.left + '" x2="' + (W - PAD.right) + '" y1="' +
        py(v).toFixed(2) + '" y2="' + py(v).toFixed(2) + '"></line><text class="tick" x="' +
        (PAD.left - 6) + '" y="' + (py(v) + 4).toFixed(2) + '" text-anchor="end">' +
        tickLabel(Math.abs(v) < 1e-12 ? 0 : v, ystep) + "</text>";
    }
    for (let v = -lim; v <= lim + 1e-12; v += lim / 2) {
      svg +=
        '<line class="grid" x1="' + px(v).toFixed(2) + '" x2="' + px(v).toFixed(2) + '" y1="' +
        PAD.top + '" y2="' + (H - PAD.bottom) + '"></line><text class="tick" x="' +
        px(v).toFixed(2) + '" y="' + (H - PAD.bottom + 15) + '" text-anchor="middle">' + v +
        "</text>";
    }
    svg +=
      '<rect class="frame" x="' + PAD.left + '" y="' + PAD.top + '" width="' +
      (W - PAD.left - PAD.right) + '" height="' + (H - PAD.top - PAD.bottom) + '"></rect>';
    svg +=
      '<text class="title" x="' + PAD.left + '" y="' + (PAD.top - 9) + '">' +
      escapeHtml(plot.title) + "</text>";
    svg +=
      '<text class="axis" x="' + ((PAD.left + W - PAD.right) / 2) + '" y="' + (H - 6) +
      '" text-anchor="middle">' + escapeHtml(plot.axis) + "</text>";
    plot.series.forEach((s, i) => {
      const named = s.name ? ' data-series="' + s.name + '"' : "";
      const points = xs
        .map((x, j) => px(x).toFixed(2) + "," + clampY(py(s.ys[j])).toFixed(2))
        .join(" ");
      svg +=
        '<polyline class="line' + (s.name ? " series-" + s.name : "") + '"' + named +
        ' points="' + points + '" data-x="' + xs.join(",") + '" data-y="' + s.ys.join(",") +
        '"></polyline>';
      // the tangent at the current point: its slope is the gradient shown in the table
      if (s.slope !== undefined) {
        const dx = lim / 6;
        svg +=
          '<line class="tangent" x1="' + px(s.x0 - dx).toFixed(2) + '" y1="' +
          clampY(py(s.y0 - s.slope * dx)).toFixed(2) + '" x2="' + px(s.x0 + dx).toFixed(2) +
          '" y2="' + clampY(py(s.y0 + s.slope * dx)).toFixed(2) + '" data-slope="' + s.slope +
          '"></line>';
      }
      if (s.label !== undefined) {
        const lx = PAD.left + 8 + plot.legend * (W - PAD.left - PAD.right - 110);
        const ly = PAD.top + 16 + 15 * i;
        svg +=
          '<line class="legend series-' + s.name + '" x1="' + lx.toFixed(2) + '" x2="' +
          (lx + 18).toFixed(2) + '" y1="' + (ly - 4) + '" y2="' + (ly - 4) + '"></line>' +
          '<text class="legend" x="' + (lx + 24).toFixed(2) + '" y="' + ly + '">' +
          escapeHtml(s.label) + "</text>";
      }
    });
    for (const s of plot.series) {
      const named = s.name ? ' data-series="' + s.name + '"' : "";
      svg +=
        '<circle class="marker' + (s.name ? " series-" + s.name : "") + '"' + named +
        ' cx="' + px(s.x0).toFixed(2) + '" cy="' + clampY(py(s.y0)).toFixed(2) +
        '" r="5" data-x="' + s.x0 + '" data-y="' + s.y0 + '"></circle>';
    }
    svg += "</svg>";
    holder.innerHTML = svg;
    holder.dataset.concave = String(concave);
  }

  // ------------------------------------------------------------------------------------------
  // wiring: every control updates the state and redraws as it moves
  // ------------------------------------------------------------------------------------------
  function clampLogit(v) {
    return Math.max(-LIMITS.logit, Math.min(LIMITS.logit, v));
  }

  function setTemperature(t, from) {
    if (!Number.isFinite(t) || t <= 0) return;
    t = Math.max(LIMITS.minTemperature, Math.min(LIMITS.maxTemperature, t));
    state.temperature = t;
    if (from !== "slider") $("temperature").value = String(Math.log10(t));
    if (from !== "number") $("temperature-value").value = String(t);
    update();
  }

  const rows = $("class-rows");
  rows.addEventListener("input", (event) => {
    const el = event.target;
    const m = /^(logit|soft)-(\d+)(-value)?$/.exec(el.id);
    if (m === null) return;
    const i = Number(m[2]);
    const v = Number(el.value);
    if (el.value === "" || !Number.isFinite(v)) return;
    if (m[1] === "logit") {
      state.logits[i] = clampLogit(v);
      const twin = $(m[3] ? "logit-" + i : "logit-" + i + "-value");
      twin.value = String(state.logits[i]);
    } else {
      state.soft[i] = Math.max(0, Math.min(1, v));
    }
    update();
  });
  rows.addEventListener("change", (event) => {
    const el = event.target;
    if (el.name === "true-class") {
      state.trueClass = Number(el.value);
      buildTable();
      update();
    } else if (/^target-\d+$/.test(el.id)) {
      state.targets[Number(el.id.slice(7))] = el.checked ? 1 : 0;
      update();
    } else if (/^logit-\d+-value$/.test(el.id)) {
      el.value = String(state.logits[Number(el.id.split("-")[1])]);
    }
  });
  $("classes").addEventListener("input", (event) => {
    const n = Number(event.target.value);
    if (!Number.isFinite(n) || n < LIMITS.minClasses || n > LIMITS.maxClasses) return;
    setClassCount(n);
    buildTable();
    update();
  });
  $("classes").addEventListener("change", (event) => {
    event.target.value = String(state.logits.length); // a value out of range is undone
  });
  $("temperature").addEventListener("input", (event) => {
    const t = Number(Math.pow(10, Number(event.target.value)).toPrecision(4));
    setTemperature(t, "slider");
  });
  $("temperature-value").addEventListener("input", (event) => {
    setTemperature(Number(event.target.value), "number");
  });
  for (const radio of document.querySelectorAll('input[name="label-mode"]')) {
    radio.addEventListener("change", (event) => {
      state.labelMode = event.target.value;
      if (state.labelMode === "soft" && math.sum(state.soft) === 0) {
        state.soft = state.logits.map((unused, i) => (i === state.trueClass ? 1 : 0));
      }
      buildTable();
      update();
    });
  }
  $("curve-logit").addEventListener("change", (event) => {
    state.curve = event.target.value;
    update();
  });
  for (const tab of document.querySelectorAll("button[data-tab]")) {
    tab.addEventListener("click", () => {
      state.view = tab.dataset.tab;
      showView();
      buildTable();
      update();
    });
  }

  // the regression view's three numbers, each a slider and a number box kept together
  const REGRESSION_CONTROLS = {
    residual: { min: -LIMITS.residual, max: LIMITS.residual },
    beta: { min: 0, max: LIMITS.maxBeta },
    delta: { min: LIMITS.minDelta, max: LIMITS.maxBeta },
  };
  for (const [name, range] of Object.entries(REGRESSION_CONTROLS)) {
    const twins = [$(name), $(name + "-value")];
    for (const el of twins) {
      el.min = String(range.min);
      el.max = String(range.max);
      el.value = String(state[name]);
      el.addEventListener("input", () => {
        const v = Number(el.value);
        if (el.value === "" || !Number.isFinite(v)) return;
        state[name] = Math.max(range.min, Math.min(range.max, v));
        for (const twin of twins) if (twin !== el) twin.value = String(state[name]);
        update();
      });
      el.addEventListener("change", () => {
        el.value = String(state[name]); // a value out of range is undone
      });
    }
  }

  // the language: every word changes, the state (and so every number) stays
  for (const button of document.querySelectorAll("button[data-lang]")) {
    button.addEventListener("click", () => {
      state.lang = button.dataset.lang;
      relabel();
      buildTable();
      buildRegression();
      update();
    });
  }

  setClassCount(state.logits.length);
  markLanguage(); // the static text is already in the page's language
  showView();
  buildTable();
  buildRegression();
  setTemperature(state.temperature);
  document.body.dataset.ready = "true";
  window.crossentropyExplore = { math: math, state: state, messages: _ };
})();
