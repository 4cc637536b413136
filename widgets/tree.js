// The experiment tree: a virtual list (only rows in view exist in the page), collapsible
// subtrees, the SOTA highlighted, a detail pane for the clicked node.
const ROW = 22;
const OPEN_ALL_UP_TO = 300;   // smaller trees start fully expanded

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

function fmt(value) {
  if (value == null) return "";
  return Math.abs(value) >= 1e4 || (Math.abs(value) < 1e-3 && value !== 0) ? value.toExponential(3) : (+value.toFixed(4)).toString();
}

// Index the flat columns: children per node, roots, and the path to the SOTA.
function index(columns) {
  const ids = columns.id || [];
  const row = new Map(ids.map((id, i) => [id, i]));
  const children = new Map();
  const roots = [];
  ids.forEach((id, i) => {
    const parent = columns.parent[i];
    if (parent < 0 || !row.has(parent)) roots.push(id);
    else (children.get(parent) || children.set(parent, []).get(parent)).push(id);
  });
  return { ids, row, children, roots };
}

function render({ model, el }) {
  const root = element("div", "jx-tree");
  const head = element("div", "jx-tree-head");
  const summary = element("span", "jx-tree-summary");
  const expandAll = element("button", "jx-expand-all", "Expand all");
  const collapseAll = element("button", "jx-collapse-all", "Collapse all");
  const toSota = element("button", "jx-to-sota", "Show best");
  head.append(summary, expandAll, collapseAll, toSota);
  const body = element("div", "jx-tree-body");
  const viewport = element("div", "jx-tree-viewport");
  const spacer = element("div", "jx-tree-spacer");
  viewport.appendChild(spacer);
  const detail = element("div", "jx-tree-detail");
  body.append(viewport, detail);
  root.append(head, body);
  el.appendChild(root);

  let tree = index({});
  let expanded = new Set();
  let visible = [];          // [id, depth] in display order

  function depthFirst() {
    visible = [];
    const stack = tree.roots.slice().reverse().map((id) => [id, 0]);
    while (stack.length) {
      const [id, depth] = stack.pop();
      visible.push([id, depth]);
      const kids = tree.children.get(id);
      if (kids && expanded.has(id)) for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1]);
    }
    spacer.style.height = `${visible.length * ROW}px`;
  }

  function rowFor(id, depth) {
    const columns = model.get("columns");
    const i = tree.row.get(id);
    const status = columns.status[i];
    const line = element("div", "jx-node");
    line.dataset.id = id;
    line.dataset.status = status;
    if (id === model.get("sota")) line.classList.add("jx-sota");
    if (id === model.get("selected")) line.classList.add("jx-selected");
    line.style.paddingLeft = `${4 + depth * 16}px`;
    const kids = tree.children.get(id);
    const toggle = element("span", "jx-toggle", kids ? (expanded.has(id) ? "▾" : "▸") : "");
    if (kids) toggle.title = `${kids.length} children`;
    line.append(toggle, element("span", "jx-dot"), element("span", "jx-id", `#${id}`),
      element("span", "jx-value", fmt(columns.value[i])), element("span", "jx-label", columns.label[i]));
    if (id === model.get("sota")) line.appendChild(element("span", "jx-star", "★ SOTA"));
    return line;
  }

  function draw() {
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW) - 5);
    const last = Math.min(visible.length, first + Math.ceil(viewport.clientHeight / ROW) + 10);
    const rows = [];
    for (let k = first; k < last; k++) {
      const line = rowFor(visible[k][0], visible[k][1]);
      line.style.top = `${k * ROW}px`;
      rows.push(line);
    }
    spacer.replaceChildren(...rows);
  }

  function pathTo(id) {
    const columns = model.get("columns");
    let current = id;
    while (tree.row.has(current)) {
      const parent = columns.parent[tree.row.get(current)];
      if (parent < 0) break;
      expanded.add(parent);
      current = parent;
    }
  }

  function load() {
    const columns = model.get("columns");
    const first = tree.ids.length === 0;
    tree = index(columns);
    if (first) {
      expanded = new Set(tree.ids.length <= OPEN_ALL_UP_TO ? tree.children.keys() : tree.roots);
      if (model.get("sota") >= 0) pathTo(model.get("sota"));
    }
    const best = model.get("sota");
    const value = best >= 0 ? columns.value[tree.row.get(best)] : null;
    summary.textContent = `trace ${model.get("name")} · ${tree.ids.length} nodes · ` +
      (best >= 0 ? `best #${best} ${model.get("metric")}=${fmt(value)} (${model.get("maximize") ? "max" : "min"})` : "no success yet");
    depthFirst();
    draw();
  }

  function showDetail() {
    const d = model.get("detail");
    if (!d || d.id == null) { detail.replaceChildren(element("div", "jx-hint", "Click a node for its code, params, metrics and log.")); return; }
    const parts = [element("div", "jx-detail-title", `#${d.id} · ${d.status}` + (d.run_id != null ? ` · run ${d.run_id}` : "") +
      (d.duration != null ? ` · ${d.duration.toFixed(1)} s` : ""))];
    if (d.parent != null) {
      const up = element("button", "jx-parent", `↑ parent #${d.parent}`);
      up.addEventListener("click", () => select(d.parent));
      parts.push(up);
    }
    const section = (title, text) => { if (text) parts.push(element("div", "jx-detail-label", title), element("pre", "jx-detail-pre", text)); };
    section("metrics", Object.entries(d.metrics || {}).map(([k, v]) => `${k} = ${v}`).join("\n"));
    section("params", Object.entries(d.params || {}).map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join("\n"));
    section("limits", Object.entries(d.limits || {}).filter(([, v]) => v != null && v !== false).map(([k, v]) => `${k} = ${v}`).join("\n"));
    section("error", d.error);
    section("code", d.code);
    section("log (tail)", d.log);
    detail.replaceChildren(...parts);
  }

  // Select a node and bring it into view (its ancestors expanded).
  function select(id) {
    pathTo(id);
    depthFirst();
    const k = visible.findIndex(([shown]) => shown === id);
    if (k * ROW < viewport.scrollTop || (k + 1) * ROW > viewport.scrollTop + viewport.clientHeight) {
      viewport.scrollTop = Math.max(0, k * ROW - viewport.clientHeight / 2);
    }
    model.set("selected", id);
    model.save_changes();
    draw();
  }

  spacer.addEventListener("click", (event) => {
    const line = event.target.closest(".jx-node");
    if (!line) return;
    const id = Number(line.dataset.id);
    if (event.target.classList.contains("jx-toggle") && tree.children.has(id)) {
      expanded.has(id) ? expanded.delete(id) : expanded.add(id);
      depthFirst();
    } else {
      model.set("selected", id);
      model.save_changes();
    }
    draw();
  });
  viewport.addEventListener("scroll", () => requestAnimationFrame(draw));
  expandAll.addEventListener("click", () => { expanded = new Set(tree.children.keys()); depthFirst(); draw(); });
  collapseAll.addEventListener("click", () => { expanded = new Set(); depthFirst(); draw(); });
  toSota.addEventListener("click", () => { if (model.get("sota") >= 0) select(model.get("sota")); });

  const handlers = [["change:columns change:sota change:name", load], ["change:detail", showDetail], ["change:selected", draw]];
  for (const [events, handler] of handlers) model.on(events, handler);
  load();
  showDetail();
  requestAnimationFrame(draw);      // the viewport has its height only once it is in the page
  return () => { for (const [events, handler] of handlers) model.off(events, handler); };
}

export default { render };
