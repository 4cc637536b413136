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
  const log = element("pre", "jx-log");          // the tail, or the whole log while "Full log" is on
  const counter = element("div", "jx-log-count");
  const net = element("div", "jx-network");
  const foot = element("div", "jx-foot");
  const timeline = element("div", "jx-timeline");  // once the run ended: its phases as a bar and a line
  const bar = element("div", "jx-timeline-bar");
  const phasesLine = element("div", "jx-timeline-line");
  timeline.append(bar, phasesLine);
  root.append(head, gauges, log, counter, net, timeline, foot);
  el.appendChild(root);
  let whole = false;                             // showing the whole log instead of the tail

  cancel.addEventListener("click", () => {
    cancel.disabled = true;
    cancel.textContent = "Cancelling…";
    model.send({ action: "cancel" });
  });
  full.addEventListener("click", () => {
    whole = !whole;
    full.textContent = whole ? "Tail" : "Full log";
    root.classList.toggle("jx-whole", whole);
    if (whole) model.send({ action: "full_log" });  // the kernel always answers (a changed full_log)
    drawLog();
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
    limits.textContent = model.get("limits_text");
    foot.textContent = model.get("ending") ||
      (model.get("background") && id && !FINAL.includes(status) ? `in the background: %jx wait ${id} for its result` : "");
    foot.dataset.status = status;
    tick();
  }

  // The newest value of `key` a sample has (a sample may lack one, e.g. the very first).
  function latest(samples, key) {
    for (let i = samples.length - 1; i >= 0; i--) if (samples[i][key] != null) return samples[i][key];
    return null;
  }

  function drawGauges() {
    const samples = model.get("samples");
    const peak = model.get("peak_memory");
    const over = FINAL.includes(model.get("status"));
    // A backend that cannot sample (Ray) shows no empty gauges; a run over before its first
    // sample still shows the peak memory it reached.
    gauges.hidden = samples.length === 0 && !(over && peak);
    const cpu = latest(samples, "cpu");
    const memLimit = model.get("limits").memory;
    const memory = over && peak ? `peak ${bytes(peak)}` : bytes(latest(samples, "memory"));
    gauges.replaceChildren(
      gauge("CPU", samples.map((s) => s.cpu), 100, cpu != null ? `${cpu.toFixed(0)} %` : "-"),
      gauge("Memory", samples.map((s) => s.memory), memLimit, `${memory}${memLimit ? ` / ${bytes(memLimit)}` : ""}`),
    );
    const gpu = latest(samples, "gpu");
    if (gpu != null) gauges.appendChild(gauge("GPU", samples.map((s) => s.gpu), 100, `${gpu.toFixed(0)} %`));
    const gpuMemory = latest(samples, "gpu_memory");
    if (gpuMemory != null) gauges.appendChild(gauge("GPU mem", samples.map((s) => s.gpu_memory), null, bytes(gpuMemory)));
  }

  function drawLog() {
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const lines = model.get("log");
    const total = model.get("log_lines");
    if (whole) {
      log.textContent = model.get("full_log") || "loading…";
      counter.textContent = "";
    } else {
      log.replaceChildren(...lines.map(([stream, text]) => element("div", `jx-line jx-${stream}`, text || " ")));
      counter.textContent = total > lines.length ? `last ${lines.length} of ${total} lines` : "";
    }
    log.hidden = !whole && lines.length === 0;
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

  function drawTimeline() {
    const phases = model.get("phases");
    const line = model.get("timeline_line");
    timeline.hidden = !line;
    const total = phases.reduce((sum, p) => sum + p.seconds, 0) || 1;
    bar.replaceChildren(...phases.map((p) => {
      const part = element("span", "jx-timeline-part");
      part.style.width = `${(100 * p.seconds / total).toFixed(2)}%`;
      part.style.background = p.colour;
      part.title = p.label;
      part.dataset.phase = p.phase;
      return part;
    }));
    phasesLine.textContent = line ? `timeline ${line}` : "";
  }

  const handlers = [
    ["change:status change:run_id change:title change:backend change:limits_text change:duration change:ending " +
     "change:background change:started", drawHead],
    ["change:samples change:limits change:peak_memory change:status", drawGauges],
    ["change:log change:log_lines change:full_log", drawLog],
    ["change:network", drawNetwork],
    ["change:phases change:timeline_line", drawTimeline],
  ];
  for (const [events, handler] of handlers) model.on(events, handler);
  drawHead(); drawGauges(); drawLog(); drawNetwork(); drawTimeline();
  const clock = setInterval(tick, 500);
  return () => {
    clearInterval(clock);
    for (const [events, handler] of handlers) model.off(events, handler);
  };
}

export default { render };
