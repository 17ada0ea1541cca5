// groundgen report gallery: client-side filters and pagination over the JSON index in this page.
// Every string from the warehouse is set with textContent / attributes, never parsed as HTML.
(function () {
  "use strict";
  var index = JSON.parse(document.getElementById("gallery-data").textContent);
  var config = JSON.parse(document.getElementById("report-config").textContent);
  var F = {};
  index.fields.forEach(function (name, i) { F[name] = i; });
  var rows = index.rows;
  var state = { split: "", category: "", reason: "", text: "", page: 0 };
  var visible = rows;
  var chunks = {};      // chunk number -> {systems, rows} once loaded
  var waiting = {};     // chunk number -> callbacks

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  window.groundgenDetail = function (number, payload) {
    chunks[number] = payload;
    (waiting[number] || []).forEach(function (callback) { callback(payload); });
    delete waiting[number];
  };

  function loadChunk(number, callback) {
    if (chunks[number]) { callback(chunks[number]); return; }
    if (waiting[number]) { waiting[number].push(callback); return; }
    waiting[number] = [callback];
    var script = document.createElement("script");
    script.src = config.detail + "/" + String(number).padStart(5, "0") + ".js";
    script.onerror = function () {
      (waiting[number] || []).forEach(function (cb) { cb(null); });
      delete waiting[number];
    };
    document.body.appendChild(script);
  }

  function matches(row) {
    if (state.split === "dropped" && row[F.status] !== "dropped") return false;
    if ((state.split === "sft" || state.split === "rl") && (row[F.status] !== "kept" || row[F.split] !== state.split)) return false;
    if (state.category && row[F.category] !== state.category) return false;
    if (state.reason && row[F.reason] !== state.reason) return false;
    if (state.text) {
      var needle = state.text.toLowerCase();
      if ((row[F.prompt] + "\n" + row[F.gen_prompt] + "\n" + row[F.id]).toLowerCase().indexOf(needle) < 0) return false;
    }
    return true;
  }

  function image(src, alt, note, className) {
    if (!src) {
      var missing = el("div", "missing " + (className || ""), note || "image missing");
      missing.setAttribute("role", "img");
      missing.setAttribute("aria-label", note || "image missing");
      return missing;
    }
    var img = el("img", className || "");
    img.loading = "eager";
    img.decoding = "async";
    img.alt = alt;
    img.src = src;
    return img;
  }

  function renderTurns(container, row, payload) {
    container.textContent = "";
    if (!payload || !payload.rows[row[F.id]]) {
      container.appendChild(el("p", "empty", "The trajectory file of this sample is missing next to the report."));
      return;
    }
    var toggle = el("button", "expand-all", "expand all turns");
    toggle.type = "button";
    toggle.addEventListener("click", function () {
      var open = toggle.textContent === "expand all turns";
      container.querySelectorAll("details.turn").forEach(function (node) { node.open = open; });
      toggle.textContent = open ? "collapse all turns" : "expand all turns";
    });
    container.appendChild(toggle);
    payload.rows[row[F.id]].forEach(function (turn, number) {
      var details = el("details", "turn turn-" + turn[0]);
      var parts = turn[0] === "system" ? [["system", payload.systems[turn[1]]]] : turn[1];
      var kinds = parts.map(function (part) { return part[0]; }).join(" + ");
      details.appendChild(el("summary", null, "#" + number + " " + turn[0] + ": " + kinds));
      parts.forEach(function (part) {
        var block = el("div", "part part-" + part[0].replace(/ /g, "-"));
        block.appendChild(el("span", "kind", part[0]));
        block.appendChild(el("pre", null, part[1]));
        details.appendChild(block);
      });
      if (turn[0] !== "system" && turn[2].length) {
        var list = el("ul", "attached");
        turn[2].forEach(function (image) { list.appendChild(el("li", null, image[0] + " — " + image[1])); });
        details.appendChild(list);
      }
      container.appendChild(details);
    });
  }

  function card(row) {
    var article = el("article", "sample " + row[F.status]);
    article.dataset.id = row[F.id];
    article.dataset.status = row[F.status];
    article.dataset.split = row[F.split];
    article.dataset.category = row[F.category];
    article.dataset.reason = row[F.reason];
    var head = el("header");
    var badge = row[F.status] === "kept" ? el("span", "badge kept", "kept · " + row[F.split])
      : el("span", "badge dropped", "dropped · " + (row[F.reason] || "unknown reason"));
    head.appendChild(badge);
    head.appendChild(el("span", "badge cat", row[F.category]));
    if (row[F.difficulty]) head.appendChild(el("span", "badge", row[F.difficulty]));
    head.appendChild(el("code", "sid", row[F.id]));
    article.appendChild(head);

    var body = el("div", "body");
    var figure = el("figure", "gt");
    figure.appendChild(image(row[F.gt], "ground-truth image", row[F.gt_note], "gt-img"));
    figure.appendChild(el("figcaption", null, row[F.gt] ? "ground truth · " + row[F.gt_size] : row[F.gt_note]));
    body.appendChild(figure);
    var text = el("div", "text");
    text.appendChild(el("h4", null, "prompt"));
    text.appendChild(el("p", "prompt", row[F.prompt]));
    text.appendChild(el("h4", null, "gen_prompt"));
    text.appendChild(el("p", "gen-prompt", row[F.gen_prompt] || "(none: trajectory ended with " + (row[F.ending] || "no answer") + ")"));
    if (row[F.duplicate_of]) text.appendChild(el("p", "dup", "duplicate of " + row[F.duplicate_of]));
    body.appendChild(text);
    article.appendChild(body);

    var refs = row[F.refs];
    if (refs.length) {
      var strip = el("div", "refs");
      refs.forEach(function (ref) {
        var item = el("figure", "ref");
        item.appendChild(image(ref[1], ref[0] || ref[2], "reference image missing", "ref-img"));
        item.appendChild(el("figcaption", null, ref[2] + " · " + (ref[0] || "untitled")));
        if (ref[3]) item.title = ref[3];
        strip.appendChild(item);
      });
      article.appendChild(strip);
    }
    var trajectory = el("details", "trajectory");
    trajectory.appendChild(el("summary", null, "trajectory: " + row[F.turns] + " turns, " + row[F.tool_calls] + " tool calls, ended with " + (row[F.ending] || "?")));
    var turns = el("div", "turns");
    turns.appendChild(el("p", "empty", "loading…"));
    trajectory.appendChild(turns);
    trajectory.addEventListener("toggle", function () {
      if (trajectory.open && !trajectory.dataset.loaded) {
        trajectory.dataset.loaded = "1";
        loadChunk(row[F.chunk], function (payload) { renderTurns(turns, row, payload); });
      }
    });
    article.appendChild(trajectory);
    return article;
  }

  function render() {
    var grid = document.getElementById("gallery-grid");
    var pages = Math.max(1, Math.ceil(visible.length / config.pageSize));
    state.page = Math.min(state.page, pages - 1);
    var start = state.page * config.pageSize;
    var fragment = document.createDocumentFragment();
    visible.slice(start, start + config.pageSize).forEach(function (row) { fragment.appendChild(card(row)); });
    grid.textContent = "";
    if (!visible.length) grid.appendChild(el("p", "empty", rows.length ? "No sample matches these filters." : "No samples in this report."));
    grid.appendChild(fragment);
    document.getElementById("gallery-count").textContent = visible.length + " of " + rows.length + " shown";
    document.querySelectorAll(".page-label").forEach(function (node) {
      node.textContent = "page " + (state.page + 1) + " of " + pages;
    });
    document.querySelectorAll(".pager .prev").forEach(function (node) { node.disabled = state.page === 0; });
    document.querySelectorAll(".pager .next").forEach(function (node) { node.disabled = state.page >= pages - 1; });
  }

  function refilter() {
    visible = rows.filter(matches);
    state.page = 0;
    render();
  }

  [["filter-split", "split"], ["filter-category", "category"], ["filter-reason", "reason"]].forEach(function (pair) {
    document.getElementById(pair[0]).addEventListener("change", function (event) {
      state[pair[1]] = event.target.value;
      refilter();
    });
  });
  var typing = null;
  document.getElementById("filter-text").addEventListener("input", function (event) {
    clearTimeout(typing);
    typing = setTimeout(function () { state.text = event.target.value.trim(); refilter(); }, 150);
  });
  document.querySelectorAll(".pager .prev").forEach(function (node) {
    node.addEventListener("click", function () { state.page -= 1; render(); });
  });
  document.querySelectorAll(".pager .next").forEach(function (node) {
    node.addEventListener("click", function () { state.page += 1; render(); });
  });
  render();
  document.body.dataset.galleryReady = "1";
})();
