// The live run panel. State comes only from the model's traits; the page adds the clock.
const FINAL = ["succeeded", "failed", "timeout", "oom", "cancelled", "cached"];

function bytes(n) {
  if (n == null) return "-";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function seconds(s) {
  if (s == null) return "";
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  const rest = Math.round(s - m * 60);
  return rest ? `${m} min ${rest} s` : `${m} min`;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

// An SVG polyline of the last values, scaled to `top` (or to the largest value).
function sparkline(values, top) {
  const width = 120, height = 28;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "jx-spark");
  const shown = values.filter((v) => v != null).slice(-60);
  if (shown.length > 1) {
    const max = Math.max(top || 0, ...shown, 1e-9);
    const step = width / (shown.length - 1);
    const points = shown.map((v, i) => `${(i * step).toFixed(1)},${(height - 1 - (v / max) * (height - 2)).toFixed(1)}`);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.join(" "));
    svg.appendChild(line);
  }
  return svg;
}

function gauge(label, values, top, current) {
  const box = element("div", "jx-gauge");
  box.appendChild(element("span", "jx-gauge-label", label));
  box.appendChild(sparkline(values, top));
  box.appendChild(element("span", "jx-gauge-value", current));
  return box;
}

function render({ model, el }) {
  const root = element("div", "jx-run");
  const head = element("div", "jx-head");
  const badge = element("span", "jx-status");
  const title = element("span", "jx-title");
  const backend = element("span", "jx-backend");
  const limits = element("span", "jx-limits");
  const elapsed = element("span", "jx-elapsed");
  const cancel = element("button", "jx-cancel", "Cancel");
  const full = element("button", "jx-full-button", "Full log");
  head.append(badge, title, backend, limits, elapsed, cancel, full);
  const gauges = element("div", "jx-gauges");
  const log = element("pre", "jx-log");
  const counter = element("div", "jx-log-count");
  const fullLog = element("pre", "jx-full-log");
  const net = element("div", "jx-network");
  const foot = element("div", "jx-foot");
  root.append(head, gauges, log, counter, fullLog, net, foot);
  el.appendChild(root);

  cancel.addEventListener("click", () => {
    cancel.disabled = true;
    cancel.textContent = "Cancelling…";
    model.send({ action: "cancel" });
  });
  full.addEventListener("click", () => {
    if (fullLog.classList.contains("jx-open")) { fullLog.classList.remove("jx-open"); return; }
    fullLog.textContent = "loading…";
    fullLog.classList.add("jx-open");
    model.send({ action: "full_log" });
  });

  function tick() {
    const status = model.get("status");
    const started = model.get("started");
    const duration = model.get("duration");
    if (duration != null) elapsed.textContent = seconds(duration);
    else if (started) elapsed.textContent = seconds(Date.now() / 1000 - started);
    cancel.hidden = FINAL.includes(status) || model.get("run_id") === 0;
  }

  function drawHead() {
    const status = model.get("status");
    badge.textContent = status;
    badge.dataset.status = status;
    root.dataset.status = status;
    const id = model.get("run_id");
    title.textContent = (id ? `run ${id}` : "run") + (model.get("title") ? ` · ${model.get("title")}` : "") +
      (model.get("background") ? " · background" : "");
    backend.textContent = model.get("backend");
    const l = model.get("limits");
    const parts = [];
    if (l.memory) parts.push(`mem ${bytes(l.memory)}`);
    if (l.cpus) parts.push(`cpus ${l.cpus}`);
    if (l.timeout) parts.push(`timeout ${seconds(l.timeout)}`);
    if (l.gpus) parts.push(`gpus ${l.gpus}`);
    if (l.network) parts.push(l.network === true ? "network" : `network ${l.network}`);
    limits.textContent = parts.join(" · ");
    if (FINAL.includes(status)) {
      const error = model.get("error");
      const peak = model.get("peak_memory");
      foot.textContent = `${status} in ${seconds(model.get("duration") || 0)}` +
        (peak ? ` · peak memory ${bytes(peak)}` : "") + (error ? ` · ${error}` : "");
      foot.dataset.status = status;
    } else {
      foot.textContent = "";
    }
    tick();
  }

  function drawGauges() {
    const samples = model.get("samples");
    gauges.hidden = samples.length === 0;      // a backend that cannot sample (Ray) shows no empty gauges
    const last = samples[samples.length - 1] || {};
    const memLimit = model.get("limits").memory;
    gauges.replaceChildren(
      gauge("CPU", samples.map((s) => s.cpu), 100, last.cpu != null ? `${last.cpu.toFixed(0)} %` : "-"),
      gauge("Memory", samples.map((s) => s.memory), memLimit,
        `${bytes(last.memory)}${memLimit ? ` / ${bytes(memLimit)}` : ""}`),
    );
    if (samples.some((s) => s.gpu != null)) {
      gauges.appendChild(gauge("GPU", samples.map((s) => s.gpu), 100, last.gpu != null ? `${last.gpu.toFixed(0)} %` : "-"));
    }
    if (samples.some((s) => s.gpu_memory != null)) {
      gauges.appendChild(gauge("GPU mem", samples.map((s) => s.gpu_memory), null, bytes(last.gpu_memory)));
    }
  }

  function drawLog() {
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const lines = model.get("log");
    log.replaceChildren(...lines.map(([stream, text]) => element("div", `jx-line jx-${stream}`, text || " ")));
    const total = model.get("log_lines");
    counter.textContent = total > lines.length ? `last ${lines.length} of ${total} lines` : "";
    log.hidden = lines.length === 0;
    if (stick) log.scrollTop = log.scrollHeight;
  }

  function drawNetwork() {  // a host-list run's connections, once it has ended
    const n = model.get("network");
    net.hidden = !n || n.hosts === undefined;
    if (net.hidden) return;
    const refused = n.refused ? ` (${n.refused_to.join(", ")})` : "";
    net.textContent = `network ${n.hosts}: ${n.connections} connections, ${n.refused} refused${refused}; ` +
      `${bytes(n.sent)} out, ${bytes(n.received)} in`;
    net.dataset.refused = n.refused ? "yes" : "no";
  }

  function drawFullLog() {
    if (fullLog.classList.contains("jx-open")) fullLog.textContent = model.get("full_log") || "(empty log)";
  }

  const handlers = [
    ["change:status change:run_id change:title change:backend change:limits change:duration change:error " +
     "change:peak_memory change:background change:started", drawHead],
    ["change:samples change:limits", drawGauges],
    ["change:log change:log_lines", drawLog],
    ["change:full_log", drawFullLog],
    ["change:network", drawNetwork],
  ];
  for (const [events, handler] of handlers) model.on(events, handler);
  drawHead(); drawGauges(); drawLog(); drawNetwork();
  const clock = setInterval(tick, 500);
  return () => {
    clearInterval(clock);
    for (const [events, handler] of handlers) model.off(events, handler);
  };
}

export default { render };
