/* tracekit report: draws every figure of the page from its JSON block (plotly for the charts,
   a canvas of its own for the engine timeline, which may hold 200,000 bars), and marks the
   body: data-figures (how many), data-rendered (how many drew), data-errors (errors caught). */
(function () {
  "use strict";
  var body = document.body;
  var errors = [];

  function fail(message) {
    errors.push(String(message));
    body.setAttribute("data-errors", String(errors.length));
    var box = document.getElementById("tracekit-errors");
    box.hidden = false;
    box.textContent = errors.join("\n");
  }

  window.addEventListener("error", function (e) {
    var what = e.target && e.target !== window ? (e.target.src || e.target.href || "") : "";
    fail(e.message || ("could not load " + what));
  }, true);
  window.addEventListener("unhandledrejection", function (e) { fail(e.reason); });
  var consoleError = console.error;
  console.error = function () {
    fail(Array.prototype.join.call(arguments, " "));
    consoleError.apply(console, arguments);
  };

  var TYPES = { i4: Int32Array, u2: Uint16Array, u1: Uint8Array, f8: Float64Array };

  function decode(a) {
    var bin = atob(a.b64), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new TYPES[a.dtype](bytes.buffer);
  }

  function cycles(n) { return Math.round(n).toLocaleString("en-US"); }

  // Hues around the golden angle from blue, none in the reds of the critical path.
  function color(i) {
    var hue = (200 + i * 137.508) % 360;
    if (hue > 320 || hue < 25) hue = (hue + 50) % 360;
    return "hsl(" + hue.toFixed(1) + ",58%,52%)";
  }

  var nodes = document.querySelectorAll("[data-figure]");
  var done = 0;
  body.setAttribute("data-figures", String(nodes.length));

  function drawn() {
    done += 1;
    body.setAttribute("data-rendered", String(done));
  }

  // --- plotly charts ---------------------------------------------------------------------------

  var LAYOUT = {
    height: 340, margin: { l: 80, r: 20, t: 34, b: 50 }, hovermode: "closest",
    font: { family: "system-ui, sans-serif", size: 12 }, paper_bgcolor: "#fff",
    plot_bgcolor: "#fff", legend: { font: { size: 11 } }
  };
  var CONFIG = { displaylogo: false, responsive: true, showLink: false, showSendToCloud: false };

  function plot(el, fig) {
    var layout = Object.assign({}, LAYOUT, fig.layout || {});
    ["xaxis", "yaxis"].forEach(function (axis) {
      layout[axis] = Object.assign({ gridcolor: "#eee", zerolinecolor: "#ccc" },
                                   layout[axis] || {});
    });
    if (fig.data.some(function (t) { return t.orientation === "h"; })) {
      var rows = Math.max.apply(null, fig.data.map(function (t) { return t.y.length; }));
      layout.height = Math.max(160, 60 + 22 * rows);
      layout.margin = Object.assign({}, layout.margin, { l: 260 });
    }
    return Plotly.newPlot(el, fig.data, layout, CONFIG).then(drawn);
  }

  // --- the engine timeline (canvas) ------------------------------------------------------------

  var ROW = 16, GAP = 6, TOP = 24, BOTTOM = 8, LEFT = 170, RIGHT = 12;

  function lowerBound(a, lo, hi, value) {
    while (lo < hi) {
      var mid = (lo + hi) >>> 1;
      if (a[mid] < value) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function prepare(run, names) {
    var r = { names: run.names, lo: run.lo, hi: run.hi, span: run.hi - run.lo };
    var lanes = run.names.length;
    if (run.bars) {
      r.id = decode(run.bars.id);
      r.start = decode(run.bars.start);
      r.end = decode(run.bars.end);
      r.lane = decode(run.bars.lane);
      r.opcode = decode(run.bars.opcode);
      r.layer = decode(run.bars.layer);
      r.opcodes = run.opcodes;
      r.layers = run.layers;
      r.offsets = new Int32Array(lanes + 1);
      r.longest = new Float64Array(lanes);
      for (var i = 0; i < r.lane.length; i++) {
        r.offsets[r.lane[i] + 1] += 1;
        r.longest[r.lane[i]] = Math.max(r.longest[r.lane[i]], r.end[i] - r.start[i]);
      }
      for (var k = 0; k < lanes; k++) r.offsets[k + 1] += r.offsets[k];
      r.opColor = run.opcodes.map(function (n) { return names.opcode(n); });
      r.layerColor = run.layers.map(function (n) { return names.layer(n); });
    } else {
      r.busy = decode(run.busy);
      r.width = run.width;
      r.bins = run.bins;
    }
    var ps = decode(run.path.start), pe = decode(run.path.end), pl = decode(run.path.lane);
    r.path = [];
    for (var l = 0; l < lanes; l++) r.path.push([]);
    for (var j = 0; j < pl.length; j++) r.path[pl[j]].push([ps[j], pe[j]]);
    return r;
  }

  function palette() {
    var seen = { opcode: {}, layer: {} }, order = { opcode: [], layer: [] };
    function of(kind) {
      return function (name) {
        if (!(name in seen[kind])) { seen[kind][name] = order[kind].length; order[kind].push(name); }
        return seen[kind][name];
      };
    }
    return { opcode: of("opcode"), layer: of("layer"), order: order };
  }

  function timeline(el, fig) {
    var names = palette();
    var runs = fig.runs.map(function (run) { return prepare(run, names); });
    var lanes = [];
    runs.forEach(function (r) {
      r.names.forEach(function (n) { if (lanes.indexOf(n) < 0) lanes.push(n); });
    });
    var rows = [];
    lanes.forEach(function (n) {
      runs.forEach(function (r, k) {
        var lane = r.names.indexOf(n);
        if (lane >= 0) rows.push({ run: r, lane: lane, label: n + (fig.labels[k] ? " (" + fig.labels[k] + ")" : "") });
      });
    });
    var span = Math.max.apply(null, runs.map(function (r) { return r.span; }));
    var view = { lo: 0, hi: span };
    var by = "opcode";

    var controls = document.createElement("div");
    controls.className = "controls";
    var detail = runs.some(function (r) { return r.start; });
    if (detail) {
      var select = document.createElement("select");
      ["opcode", "layer"].forEach(function (v) {
        var o = document.createElement("option");
        o.value = v; o.textContent = "colour by " + v; select.appendChild(o);
      });
      select.addEventListener("change", function () { by = select.value; draw(); legend(); });
      controls.appendChild(select);
    }
    var reset = document.createElement("button");
    reset.textContent = "reset zoom";
    reset.addEventListener("click", function () { view = { lo: 0, hi: span }; draw(); });
    controls.appendChild(reset);
    var info = document.createElement("span");
    controls.appendChild(info);
    var canvas = document.createElement("canvas");
    var tip = document.createElement("div");
    tip.className = "tip";
    var key = document.createElement("div");
    key.className = "legend";
    el.appendChild(controls);
    el.appendChild(canvas);
    el.appendChild(tip);
    el.appendChild(key);
    var height = TOP + rows.length * (ROW + GAP) + BOTTOM;
    var ctx = canvas.getContext("2d");
    var width = 0;

    function x(t) { return LEFT + (t - view.lo) / (view.hi - view.lo) * (width - LEFT - RIGHT); }
    function t(px) { return view.lo + (px - LEFT) / (width - LEFT - RIGHT) * (view.hi - view.lo); }

    function colours(r) {
      return by === "layer" ? r.layerColor : r.opColor;
    }

    function drawBars(r, lane, y) {
      var a = r.offsets[lane], b = r.offsets[lane + 1];
      var i = lowerBound(r.start, a, b, view.lo - r.longest[lane]);
      var map = colours(r), codes = by === "layer" ? r.layer : r.opcode;
      var lastX = -1, lastC = -2;
      for (; i < b; i++) {
        var s = r.start[i];
        if (s > view.hi) break;
        var e = r.end[i];
        if (e < view.lo) continue;
        var x0 = Math.max(x(s), LEFT - 1), x1 = Math.min(Math.max(x(e), x0 + 1), width - RIGHT);
        var c = codes[i] < 0 ? -1 : map[codes[i]];
        var px = Math.floor(x0);
        if (px === lastX && c === lastC && x1 - x0 <= 1) continue;
        ctx.fillStyle = c < 0 ? "#999" : color(c);
        ctx.fillRect(x0, y, x1 - x0, ROW);
        lastX = px; lastC = c;
      }
    }

    function drawBins(r, lane, y, row) {
      var k0 = Math.max(0, Math.floor(view.lo / r.width));
      var k1 = Math.min(r.bins - 1, Math.floor(view.hi / r.width));
      ctx.fillStyle = color(row);
      for (var k = k0; k <= k1; k++) {
        var w = Math.min((k + 1) * r.width, r.span) - k * r.width;
        var occ = r.busy[lane * r.bins + k] / Math.max(w, 1);
        if (occ <= 0) continue;
        var x0 = Math.max(x(k * r.width), LEFT), x1 = Math.max(x(k * r.width + w), x0 + 1);
        ctx.fillRect(x0, y + ROW * (1 - occ), Math.min(x1, width - RIGHT) - x0, ROW * occ);
      }
    }

    function step(range) {
      var raw = range / 8, p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1))));
      var m = [1, 2, 5, 10].find(function (f) { return f * p >= raw; });
      return Math.max(1, m * p);
    }

    function draw() {
      width = el.clientWidth || 1000;
      var ratio = window.devicePixelRatio || 1;
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
      canvas.style.height = height + "px";
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, width, height);
      ctx.font = "11px system-ui, sans-serif";
      ctx.textBaseline = "middle";
      var d = step(view.hi - view.lo);
      ctx.strokeStyle = "#eee";
      ctx.fillStyle = "#555";
      for (var g = Math.ceil(view.lo / d) * d; g <= view.hi; g += d) {
        var gx = Math.round(x(g)) + 0.5;
        ctx.beginPath(); ctx.moveTo(gx, TOP - 4); ctx.lineTo(gx, height - BOTTOM); ctx.stroke();
        if (gx < width - RIGHT - 60) ctx.fillText(cycles(g), gx + 2, 10);
      }
      rows.forEach(function (row, k) {
        var y = TOP + k * (ROW + GAP), r = row.run;
        ctx.fillStyle = "#222";
        ctx.fillText(row.label, 4, y + ROW / 2);
        ctx.fillStyle = "#f7f7f7";
        ctx.fillRect(LEFT, y, width - LEFT - RIGHT, ROW);
        ctx.save();
        ctx.beginPath(); ctx.rect(LEFT, y - 3, width - LEFT - RIGHT, ROW + 6); ctx.clip();
        if (r.start) drawBars(r, row.lane, y); else drawBins(r, row.lane, y, k);
        ctx.fillStyle = "#d62728";
        r.path[row.lane].forEach(function (seg) {
          if (seg[1] < view.lo || seg[0] > view.hi) return;
          var x0 = x(seg[0]), x1 = Math.max(x(seg[1]), x0 + 1);
          ctx.fillRect(x0, y - 3, x1 - x0, 3);
          ctx.fillRect(x0, y + ROW, x1 - x0, 3);
        });
        ctx.restore();
      });
      info.textContent = "cycles " + cycles(view.lo) + " to " + cycles(view.hi) + " (from the start of the " + (runs.length > 1 ? "runs" : "window") + ")";
    }

    function legend() {
      key.textContent = "";
      if (!detail) {
        key.textContent = "Each lane's shading: busy cycles / cycles of each bin.";
        return;
      }
      var order = names.order[by];
      order.slice(0, 40).forEach(function (name, i) {
        var item = document.createElement("span");
        var sw = document.createElement("i");
        sw.style.background = color(i);
        item.appendChild(sw);
        item.appendChild(document.createTextNode(name));
        key.appendChild(item);
      });
      if (order.length > 40) key.appendChild(document.createTextNode("(" + (order.length - 40) + " more)"));
    }

    function hover(ev) {
      var box = canvas.getBoundingClientRect();
      var mx = ev.clientX - box.left, my = ev.clientY - box.top;
      var k = Math.floor((my - TOP) / (ROW + GAP));
      if (mx < LEFT || k < 0 || k >= rows.length || my - TOP - k * (ROW + GAP) > ROW) {
        tip.style.display = "none";
        return;
      }
      var row = rows[k], r = row.run, at = t(mx), text = null;
      if (r.start) {
        var a = r.offsets[row.lane], b = r.offsets[row.lane + 1];
        var first = lowerBound(r.start, a, b, at - r.longest[row.lane]);
        for (var i = lowerBound(r.start, a, b, at + 1e-9) - 1; i >= first; i--) {
          if (r.start[i] <= at && r.end[i] >= at) {
            var layer = r.layer[i] < 0 ? "-" : r.layers[r.layer[i]];
            text = "id " + r.id[i] + "  " + r.opcodes[r.opcode[i]] + "  layer " + layer +
              "\n" + cycles(r.lo + r.start[i]) + " to " + cycles(r.lo + r.end[i]) +
              " (" + cycles(r.end[i] - r.start[i]) + " cycles)";
            break;
          }
        }
      } else {
        var bin = Math.floor(at / r.width);
        if (bin >= 0 && bin < r.bins) {
          var w = Math.min((bin + 1) * r.width, r.span) - bin * r.width;
          var busy = r.busy[row.lane * r.bins + bin];
          text = row.label + ": cycles " + cycles(r.lo + bin * r.width) + " to " +
            cycles(r.lo + bin * r.width + w) + "\nbusy " + cycles(busy) + " (" +
            (100 * busy / Math.max(w, 1)).toFixed(1) + " %)";
        }
      }
      if (text === null) { tip.style.display = "none"; return; }
      tip.textContent = text;
      tip.style.display = "block";
      tip.style.left = Math.min(mx + 12, width - 260) + "px";
      tip.style.top = (canvas.offsetTop + my + 12) + "px";
    }

    var drag = null;
    canvas.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var box = canvas.getBoundingClientRect();
      var at = t(ev.clientX - box.left), f = Math.exp(ev.deltaY * 0.002);
      var range = Math.max((view.hi - view.lo) * f, 10);
      var lo = at - (at - view.lo) * range / (view.hi - view.lo);
      view = { lo: Math.max(0, lo), hi: Math.min(span, Math.max(0, lo) + range) };
      draw();
    }, { passive: false });
    canvas.addEventListener("mousedown", function (ev) { drag = { x: ev.clientX, view: view }; });
    window.addEventListener("mouseup", function () { drag = null; });
    canvas.addEventListener("mousemove", function (ev) {
      if (!drag) { hover(ev); return; }
      var range = drag.view.hi - drag.view.lo;
      var shift = (drag.x - ev.clientX) / (width - LEFT - RIGHT) * range;
      var lo = Math.min(Math.max(drag.view.lo + shift, 0), Math.max(span - range, 0));
      view = { lo: lo, hi: lo + range };
      draw();
    });
    canvas.addEventListener("mouseleave", function () { tip.style.display = "none"; });
    canvas.addEventListener("dblclick", function () { view = { lo: 0, hi: span }; draw(); });
    window.addEventListener("resize", draw);
    draw();
    legend();
    drawn();
  }

  // --- every figure ----------------------------------------------------------------------------

  var data = JSON.parse(document.getElementById("tracekit-data").textContent);
  Array.prototype.forEach.call(nodes, function (el) {
    var kind = el.getAttribute("data-kind");
    try {
      if (kind === "table") drawn();
      else if (kind === "timeline") timeline(el, data.figures[el.getAttribute("data-figure")]);
      else plot(el, data.figures[el.getAttribute("data-figure")]).catch(fail);
    } catch (e) {
      fail(e && e.stack ? e.stack : e);
    }
  });
}());
