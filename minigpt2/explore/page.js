// minigpt2 explorer: draws the data explore() packed into this page. Plain JavaScript, no library, no request.
//
// One selection (layer, head, position) links the views: hovering or clicking a token sets the position,
// clicking a head in the model view (or the menus) sets layer and head. `window.explorer` is the page's API
// for scripts and tests (docs/explore.md):
//   explorer.tokens                      the token labels
//   explorer.attention(layer, head)      T rows of T weights (zero above the diagonal)
//   explorer.lens(layer, position)       [[label, prob], ...] the top 5 read from residual stream `layer`
//   explorer.next(position, {temperature, top_k, top_p})   [[label, prob], ...] the kept tokens
//   explorer.select(layer, head, position), explorer.selection
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("explorer-data").textContent);
  const L = data.n_layer, H = data.n_head, V = data.n_vocab, T = data.ids.length;

  // --- the data, unpacked: base64 -> typed arrays (little-endian, as explore() wrote them) -------------

  function bytes(b64) {
    const s = atob(b64), out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function ids(b64) {
    const b = bytes(b64).buffer;
    return data.id_bytes === 2 ? new Uint16Array(b) : new Uint32Array(b);
  }
  const label = (id) => data.vocab[id];

  // attention: all keys, the causal half row by row ([L, H, T(T+1)/2] bytes), or each query's K largest keys
  // ([L, H, T, K] bytes and their positions); a weight is byte / 255
  const K = data.attention.keys, dense = K === T;
  const weights = bytes(data.attention.weights);
  const positions = dense ? null : new Uint16Array(bytes(data.attention.positions).buffer);
  const half = T * (T + 1) / 2;

  function eachWeight(layer, head, t, visit) {  // visit(key, weight) for every weight stored for query t
    if (dense) {
      const start = (layer * H + head) * half + t * (t + 1) / 2;
      for (let j = 0; j <= t; j++) visit(j, weights[start + j] / 255);
    } else {
      const start = ((layer * H + head) * T + t) * K;
      for (let i = 0; i < K; i++) {
        const j = positions[start + i];
        if (j <= t) visit(j, weights[start + i] / 255);  // later positions: padding of the first queries
      }
    }
  }

  function attentionRow(layer, head, t) {  // query t's weights on keys 0..t: Float64Array(t + 1)
    const row = new Float64Array(t + 1);
    eachWeight(layer, head, t, (j, w) => { row[j] = w; });
    return row;
  }

  // logit lens: [L + 1, T, 5] ids and probabilities
  const lensIds = ids(data.lens.ids), lensProbs = new Float32Array(bytes(data.lens.probs).buffer);

  // next token: [T, k] ids, most likely first, and log p = -value * step[t]; rest[t], the others' probability
  const nk = data.next.k, nextIds = ids(data.next.ids), nextLogp = new Uint16Array(bytes(data.next.logp).buffer);
  const ties = data.next.ties || {};  // position -> indices j whose logit equals the one before (exact ties)

  // --- the API's functions ------------------------------------------------------------------------------

  function checkInt(name, v, lo, hi) {
    if (!Number.isInteger(v) || v < lo || v > hi) throw new RangeError(`${name} must be an integer in [${lo}, ${hi}], got ${v}`);
  }

  function attention(layer, head) {
    checkInt("layer", layer, 0, L - 1); checkInt("head", head, 0, H - 1);
    const out = [];
    for (let t = 0; t < T; t++) {
      const row = new Array(T).fill(0), w = attentionRow(layer, head, t);
      for (let j = 0; j <= t; j++) row[j] = w[j];
      out.push(row);
    }
    return out;
  }

  function lens(layer, position) {
    checkInt("layer", layer, 0, L); checkInt("position", position, 0, T - 1);
    const out = [], start = (layer * T + position) * data.lens.k;
    for (let i = 0; i < data.lens.k; i++) out.push([label(lensIds[start + i]), lensProbs[start + i]]);
    return out;
  }

  function samplingOptions(options) {  // sample.py's arguments: a missing key is off (temperature: 1)
    const o = options || {};
    const num = (key, fallback) => (o[key] === undefined || o[key] === null || o[key] === "") ? fallback : Number(o[key]);
    const temperature = num("temperature", 1), topK = num("top_k", 0), topP = num("top_p", 1);
    if (!(temperature >= 0 && temperature < Infinity)) throw new RangeError(`temperature must be a number >= 0, got ${o.temperature}`);
    if (!(Number.isInteger(topK) && topK >= 0)) throw new RangeError(`top_k must be an integer >= 0 (0: all), got ${o.top_k}`);
    if (!(topP > 0 && topP <= 1)) throw new RangeError(`top_p must be in (0, 1], got ${o.top_p}`);
    return { temperature, topK, topP };
  }

  // sample.py's rules on the stored tokens: temperature, then top-k (ties with the k-th kept), then top-p (the
  // token whose probability crosses p kept). The tokens not stored ("the rest") share their probability
  // equally as far as the page knows; that matters only when they are kept at a temperature other than 1,
  // or when the nucleus reaches past the stored tokens, and then `exact` is false.
  function choose(position, options) {
    checkInt("position", position, 0, T - 1);
    const o = samplingOptions(options);
    const base = position * nk, step = data.next.step[position], rest = data.next.rest[position], nRest = V - nk;
    const logp = new Float64Array(nk);
    for (let j = 0; j < nk; j++) logp[j] = -nextLogp[base + j] * step;
    if (o.temperature === 0) return { ids: [nextIds[base]], probs: [1], restKept: 0, exact: true };  // greedy
    const tied = new Set(ties[position] || []);
    let n = nk, restKept = nRest, exact = nRest === 0 || rest === 0 || o.temperature === 1;
    if (o.topK > 0 && o.topK < V) {
      if (o.topK <= nk) {
        n = o.topK;
        while (n < nk && tied.has(n)) n++;  // tied with the k-th: kept too
        restKept = 0;
        exact = true;
      } else {
        restKept = Math.min(nRest, o.topK - nk);
        exact = exact && restKept === 0;
      }
    }
    const w = new Float64Array(n);  // exp(log p / temperature), relative to the most likely token
    for (let j = 0; j < n; j++) w[j] = Math.exp((logp[j] - logp[0]) / o.temperature);
    const wRest = nRest > 0 && rest > 0 ? Math.exp((Math.log(rest / nRest) - logp[0]) / o.temperature) : 0;
    let Z = restKept * wRest;
    for (let j = 0; j < n; j++) Z += w[j];
    if (o.topP < 1) {
      let before = 0, m = 0;
      while (m < n && before < o.topP) before += w[m++] / Z;  // a token stays if the ones above it had not reached p
      if (m === n && before < o.topP && restKept > 0) {  // the nucleus reaches into the tokens not stored
        restKept = Math.min(restKept, Math.ceil((o.topP - before) / (wRest / Z)));
        exact = false;
      } else {
        restKept = 0;
      }
      n = m;
    }
    let kept = restKept * wRest;
    for (let j = 0; j < n; j++) kept += w[j];
    const probs = [];
    for (let j = 0; j < n; j++) probs.push(w[j] / kept);
    return { ids: Array.from(nextIds.subarray(base, base + n)), probs, restKept, exact };
  }

  function next(position, options) {
    const c = choose(position, options);
    return c.ids.map((id, j) => [label(id), c.probs[j]]);
  }

  // --- the views ---------------------------------------------------------------------------------------

  const state = { layer: 0, head: 0, position: T - 1 };
  const $ = (id) => document.getElementById(id);
  const el = (tag, props, text) => {
    const e = document.createElement(tag);
    Object.assign(e, props || {});
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const pct = (p) => p >= 0.1 ? `${(100 * p).toFixed(1)}%` : p >= 0.001 ? `${(100 * p).toFixed(2)}%` : `${(100 * p).toPrecision(2)}%`;
  const shade = (rgb, a) => `rgba(${rgb}, ${Math.min(1, Math.max(0, a)).toFixed(3)})`;
  const css = getComputedStyle(document.documentElement);
  const HOT = css.getPropertyValue("--hot").trim(), COOL = css.getPropertyValue("--cool").trim();
  const maxLoss = Math.max(1e-9, ...data.losses.filter((x) => x !== null));

  function tokenChips(container, withLoss) {
    const chips = [];
    data.tokens.forEach((text, t) => {
      const chip = el("span", { className: "tok" }, text === "" ? "\u200b" : text);
      chip.dataset.position = t;
      if (withLoss) {
        const loss = data.losses[t];
        chip.title = `token ${t} · id ${data.ids[t]}` + (loss === null ? " · the first token: nothing predicts it"
          : ` · surprise ${loss.toFixed(2)} nats (p = ${pct(Math.exp(-loss))})`);
        const bar = el("span", { className: "loss" });
        bar.style.background = loss === null ? "transparent" : shade(HOT, loss / maxLoss);
        chip.appendChild(bar);
      }
      chip.addEventListener("mouseenter", () => select(state.layer, state.head, t));
      chip.addEventListener("click", () => select(state.layer, state.head, t));
      container.appendChild(chip);
      chips.push(chip);
    });
    return chips;
  }

  const textChips = tokenChips($("tokens"), true);
  const headChips = tokenChips($("head-view"), false);

  // model view: one canvas per head, at most 128 x 128 pixels (a longer text's queries and keys binned, the
  // largest weight of a bin shown); shade grows with the square root of the weight, so that small weights show
  const cells = [];
  (function modelView() {
    const view = $("model-view"), S = Math.min(T, 128), scale = S / T;
    view.style.gridTemplateColumns = `auto repeat(${H}, minmax(14px, 64px))`;
    view.appendChild(el("span"));
    for (let h = 0; h < H; h++) view.appendChild(el("span", { className: "col-label" }, `h${h}`));
    const [r, g, b] = COOL.split(",").map(Number);
    for (let l = 0; l < L; l++) {
      view.appendChild(el("span", { className: "row-label" }, `L${l}`));
      for (let h = 0; h < H; h++) {
        const canvas = el("canvas", { width: S, height: S, title: `layer ${l}, head ${h}` });
        canvas.dataset.layer = l;
        canvas.dataset.head = h;
        const img = new Float32Array(S * S);  // each bin's largest weight
        for (let t = 0; t < T; t++) {
          const y = Math.floor(t * scale) * S;
          eachWeight(l, h, t, (j, w) => {
            const i = y + Math.floor(j * scale);
            if (w > img[i]) img[i] = w;
          });
        }
        const ctx = canvas.getContext("2d"), pixels = ctx.createImageData(S, S);
        for (let i = 0; i < S * S; i++) {
          const a = Math.sqrt(img[i]);
          pixels.data.set([255 - a * (255 - r), 255 - a * (255 - g), 255 - a * (255 - b), 255], 4 * i);
        }
        ctx.putImageData(pixels, 0, 0);
        canvas.addEventListener("click", () => select(l, h, state.position));
        view.appendChild(canvas);
        cells.push(canvas);
      }
    }
  })();

  // menus for layer and head
  for (let l = 0; l < L; l++) $("layer").appendChild(el("option", { value: l }, `${l}`));
  for (let h = 0; h < H; h++) $("head").appendChild(el("option", { value: h }, `${h}`));
  $("layer").addEventListener("change", (e) => select(Number(e.target.value), state.head, state.position));
  $("head").addEventListener("change", (e) => select(state.layer, Number(e.target.value), state.position));
  for (const id of ["temperature", "top-k", "top-p"]) $(id).addEventListener("input", () => drawNext());
  // keys: left / right move the position, up / down the layer, [ and ] the head (not while typing in a box)
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT" || e.altKey || e.ctrlKey || e.metaKey) return;
    const { layer, head, position } = state, clamp = (v, n) => Math.min(n - 1, Math.max(0, v));
    const moves = { ArrowLeft: [0, 0, -1], ArrowRight: [0, 0, 1], ArrowUp: [-1, 0, 0], ArrowDown: [1, 0, 0], "[": [0, -1, 0], "]": [0, 1, 0] };
    const m = moves[e.key];
    if (!m) return;
    e.preventDefault();
    select(clamp(layer + m[0], L), clamp(head + m[1], H), clamp(position + m[2], T));
  });

  const quote = (t) => `“${data.tokens[t]}” (token ${t})`;

  function drawHead() {
    const { layer, head, position } = state, row = attentionRow(layer, head, position);
    const view = $("head-view");
    Object.assign(view.dataset, { layer, head, position });
    let top = 0;
    for (let j = 0; j <= position; j++) top = Math.max(top, row[j]);
    headChips.forEach((chip, j) => {
      const w = j <= position ? row[j] : 0;
      chip.dataset.weight = w;
      chip.className = "tok" + (j > position ? " future" : "") + (j === position ? " query" : "");
      chip.style.background = j > position ? "" : shade(COOL, Math.sqrt(w));
      chip.title = j > position ? "after the query: masked" : `weight ${pct(w)}`;
    });
    let kept = 0;
    for (let j = 0; j <= position; j++) kept += row[j];
    $("head-caption").textContent = `Layer ${layer}, head ${head}: attention from ${quote(position)} to the tokens up to it` +
      (dense ? "." : ` (its ${K} largest weights, ${pct(kept)} of it).`);
  }

  function drawLens() {
    const { position } = state, table = $("lens");
    table.textContent = "";
    const actual = position + 1 < T ? data.ids[position + 1] : null;
    const headRow = el("tr");
    headRow.appendChild(el("th", {}, "residual stream"));
    for (let i = 1; i <= data.lens.k; i++) headRow.appendChild(el("th", {}, `#${i}`));
    table.appendChild(headRow);
    for (let layer = 0; layer <= L; layer++) {
      const tr = el("tr");
      tr.appendChild(el("th", {}, layer === 0 ? "0 · embeddings" : layer === L ? `${L} · output` : `${layer} · after block ${layer - 1}`));
      const start = (layer * T + position) * data.lens.k;
      for (let i = 0; i < data.lens.k; i++) {
        const id = lensIds[start + i], p = lensProbs[start + i];
        const td = el("td", { className: "cell" + (id === actual ? " actual" : ""), title: `${label(id)} · ${pct(p)}` }, label(id));
        td.appendChild(el("small", {}, pct(p)));
        td.style.background = shade(COOL, 0.6 * Math.sqrt(p));
        tr.appendChild(td);
      }
      table.appendChild(tr);
    }
    $("lens-caption").textContent = `After ${quote(position)}: the next token each layer's residual stream would predict, read through ` +
      "the final layer norm and the tied head." + (actual === null ? "" : ` The actual next token, “${label(actual)}”, is underlined.`);
  }

  function drawNext() {
    const { position } = state, table = $("next");
    table.textContent = "";
    let c;
    try {
      c = choose(position, { temperature: $("temperature").value, top_k: $("top-k").value, top_p: $("top-p").value });
    } catch (e) {
      $("next-caption").textContent = e.message;
      return;
    }
    const shown = Math.min(c.ids.length, 40), actual = position + 1 < T ? data.ids[position + 1] : null;
    for (let j = 0; j < shown; j++) {
      const tr = el("tr");
      tr.appendChild(el("td", { className: "num" }, `${j + 1}`));
      tr.appendChild(el("td", { className: "cell" + (c.ids[j] === actual ? " actual" : "") }, label(c.ids[j])));
      const bar = el("td", { className: "bar" }), div = el("div");
      div.style.width = `${(100 * c.probs[j] / c.probs[0]).toFixed(1)}%`;
      bar.appendChild(div);
      tr.appendChild(bar);
      tr.appendChild(el("td", { className: "num" }, pct(c.probs[j])));
      table.appendChild(tr);
    }
    const total = c.ids.length + c.restKept;
    let text = `After ${quote(position)}: keeps ${total.toLocaleString("en")} of ${V.toLocaleString("en")} tokens`;
    if (shown < total) text += `, the ${shown} most likely shown`;
    text += c.exact ? "." : ". Approximate: the tokens beyond the " + `${nk.toLocaleString("en")} stored are taken to share their probability equally.`;
    $("next-caption").textContent = text;
  }

  function draw() {
    const { layer, head, position } = state;
    textChips.forEach((chip, t) => chip.classList.toggle("selected", t === position));
    cells.forEach((cell, i) => cell.classList.toggle("selected", i === layer * H + head));
    $("layer").value = layer;
    $("head").value = head;
    drawHead();
    drawLens();
    drawNext();
  }

  function select(layer, head, position) {
    checkInt("layer", layer, 0, L - 1); checkInt("head", head, 0, H - 1); checkInt("position", position, 0, T - 1);
    if (layer === state.layer && head === state.head && position === state.position) return;
    Object.assign(state, { layer, head, position });
    draw();
  }

  // --- header, notes, first drawing -------------------------------------------------------------------

  $("title").textContent = data.title;
  const losses = data.losses.filter((x) => x !== null);
  const mean = losses.length ? losses.reduce((a, b) => a + b, 0) / losses.length : null;
  $("about").textContent = `${data.model} · ${T} tokens` +
    (mean === null ? "" : ` · mean surprise ${mean.toFixed(3)} nats a token (perplexity ${Math.exp(mean).toFixed(2)})`);
  const notes = [
    "Made by minigpt2's explore(); everything is in this one file, and it asks nothing of any network.",
    "Attention weights are stored in 8 bits (error at most 1/510), the causal half only: " +
      (dense ? "every key of every query." : `each query's ${K} largest weights and their positions (every key is kept up to 128 tokens).`),
    `Next token: the ${nk.toLocaleString("en")} most likely tokens of each position are stored (log-probabilities to ` +
      "1/65,536 of their range) with the probability of all the others; the choice follows minigpt2's sample.py " +
      "(temperature, then top-k keeping ties, then top-p keeping the token that crosses p). Temperature 0 is greedy.",
    "Logit lens: stream L is the input of block L (blocks.L.resid_pre); the last is the final block's output, whose reading is the model's own prediction.",
  ];
  for (const n of notes) $("notes").appendChild(el("p", {}, n));
  draw();

  window.explorer = {
    tokens: data.tokens.slice(),
    ids: data.ids.slice(),
    losses: data.losses.slice(),
    n_layer: L, n_head: H, n_vocab: V,
    attention, lens, next, select,
    get selection() { return { layer: state.layer, head: state.head, position: state.position }; },
    readyMs: performance.now(),  // when the page became interactive, in ms since it began loading
  };
})();
