// One card per backend: state, how to fix it, and the figures it reports now.
function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

function value(key, v) {
  if (typeof v === "number" && /memory/i.test(key) && v > 1 << 20) return `${(v / 2 ** 30).toFixed(1)} GiB`;
  if (typeof v === "number") return Number.isInteger(v) ? `${v}` : v.toFixed(2);
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (v && typeof v === "object" && !Array.isArray(v)) return Object.entries(v).map(([k, x]) => `${k} ${value(k, x)}`).join(" · ");
  return JSON.stringify(v);
}

function card(entry) {
  const box = element("div", "jx-card");
  box.dataset.ok = entry.ok;
  const head = element("div", "jx-card-head");
  head.append(element("span", "jx-card-name", entry.name), element("span", "jx-card-iso", entry.isolation),
    element("span", "jx-card-state", entry.ok ? (entry.started ? "running in this kernel" : "available") : "unavailable"));
  box.appendChild(head);
  if (!entry.ok) box.appendChild(element("div", "jx-card-reason", entry.reason + (entry.fix ? ` — ${entry.fix}` : "")));
  const table = element("table", "jx-card-table");
  for (const [key, v] of Object.entries(entry.resources || {})) {
    if (key === "nodes" && Array.isArray(v)) {
      v.forEach((node) => {
        const tr = element("tr");
        tr.append(element("th", null, `node ${node.hostname || node.address || ""}`), element("td", null, value("resources", node.resources)));
        table.appendChild(tr);
      });
      continue;
    }
    const tr = element("tr");
    tr.append(element("th", null, key.replace(/_/g, " ")), element("td", null, value(key, v)));
    table.appendChild(tr);
  }
  if (table.childElementCount) box.appendChild(table);
  else if (entry.ok && !entry.started) box.appendChild(element("div", "jx-card-note", "not started in this kernel; starts on first use"));
  for (const note of entry.notes || []) box.appendChild(element("div", "jx-card-note", note));
  return box;
}

function render({ model, el }) {
  const root = element("div", "jx-resources");
  el.appendChild(root);
  const draw = () => root.replaceChildren(...model.get("backends").map(card));
  model.on("change:backends", draw);
  draw();
  return () => model.off("change:backends", draw);
}

export default { render };
