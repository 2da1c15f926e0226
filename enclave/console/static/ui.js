// Small DOM helpers: elements, forms, tables, charts (inline SVG), downloads. No framework.
// Text reaches the page only as text (textContent, text nodes, attribute values), never as
// markup, and always through `shown`; the Content-Security-Policy's Trusted Types make every
// HTML or script sink throw.

// Characters that print as nothing or reorder what follows (controls, bidi overrides and
// isolates, zero-width and other format characters, separators and look-alike spaces), so
// "bob\u202Eecila" or "Acme\u200B" could pass for another name: each is shown as ⟨U+XXXX⟩.
const HIDDEN = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\u00A0\u1680\u2000-\u200A\u202F\u205F\u3000\u115F\u1160\u3164\uFFA0]/gu;

export function shown(value) {
  return String(value).replace(HIDDEN, (c) => (c === "\n" || c === "\t" ? c
    : `⟨U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}⟩`));
}

const TEXT_ATTRS = new Set(["aria-label", "title", "placeholder"]);

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = shown(value);
    else if (TEXT_ATTRS.has(key)) el.setAttribute(key, shown(value));
    else if (key in el && !key.includes("-") && key !== "list" && key !== "form") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : shown(c))));
  return el;
}

let nextId = 0;
// A labelled form field: the label names the input; a slot below it shows its problems.
export function field(label, input, name = input.name) {
  input.id ||= `f${++nextId}`;
  const problems = h("ul", { className: "problems", "data-for": name || "" });
  input.setAttribute("aria-describedby", (problems.id = `${input.id}-problems`));
  return h("div", { className: "field", "data-field": name || "" },
    h("label", { htmlFor: input.id, text: label }), input, problems);
}

export function input(name, attrs = {}) {
  return h("input", { name, type: "text", ...attrs });
}

export function select(name, options, value) {
  const el = h("select", { name });
  for (const opt of options) {
    const [val, text] = Array.isArray(opt) ? opt : [opt, opt];
    el.append(h("option", { value: val, text, selected: val === value }));
  }
  return el;
}

// Show an API problem: each "field: message" next to its field, the rest in `general`.
export function showProblems(form, error, general) {
  for (const ul of form.querySelectorAll("ul.problems")) ul.replaceChildren();
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  general.replaceChildren();
  if (!error) return;
  const problems = error.problems?.length ? error.problems : error.message.split("; ");
  for (const text of problems) {
    const { path, message } = splitProblem(text);
    // "columns.age.bounds[0]" is shown by the slot of "columns.age.bounds" if it has none
    const slot = path && [path, path.replace(/\[\d+\]$/, "")].map((p) =>
      form.querySelector(`ul.problems[data-for="${CSS.escape(p)}"]`)).find(Boolean);
    if (slot) {
      slot.append(h("li", { text: message }));
      slot.previousElementSibling?.setAttribute("aria-invalid", "true");
    } else {
      general.append(h("p", { className: "error", text }));
    }
  }
}

// "tier standard: budget.epsilon: must be ..." → {path: "budget.epsilon", message: "must be ..."}
export function splitProblem(text) {
  const rest = text.replace(/^(tier|dataset|licence) [^:]*: /, "");
  const m = /^([A-Za-z0-9_.]+(?:\[\d+\])?): (.*)$/s.exec(rest);
  return m ? { path: m[1], message: m[2] } : { path: null, message: text };
}

export function table(columns, rows, caption) {
  return h("table", {},
    caption ? h("caption", { text: caption }) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", text: c })))),
    h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell) =>
      cell instanceof Node ? h("td", {}, cell) : h("td", { text: fmt(cell) }))))));
}

// A record keyed by names from the API (a subject, a dataset, a column): it has no prototype, so
// "__proto__", "constructor" or "toString" is a key like any other, never Object's own.
export const record = () => Object.create(null);

// obj[key] when obj holds that key itself (not inherited), else undefined.
export const own = (obj, key) => (obj != null && Object.hasOwn(obj, key) ? obj[key] : undefined);

export function fmt(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") {
    return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
  }
  if (Array.isArray(value)) return value.join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, k === "aria-label" ? shown(v) : v);
  el.append(...children.map((c) => (c instanceof Node ? c : shown(c))));
  return el;
}

// Horizontal bars with ±ci95 whiskers.
export function barChart(title, labels, values, errors = []) {
  const width = 560, row = 26, left = 120, right = 70;
  const max = Math.max(1e-9, ...values.map((v, i) => Math.abs(v) + (errors[i] || 0)));
  const scale = (v) => ((width - left - right) * Math.max(0, v)) / max;
  const svg = s("svg", { viewBox: `0 0 ${width} ${row * labels.length + 10}`, role: "img",
    "aria-label": title, class: "chart" }, s("title", {}, title));
  labels.forEach((label, i) => {
    const y = 5 + i * row, v = values[i], e = errors[i] || 0;
    svg.append(s("text", { x: left - 8, y: y + 16, "text-anchor": "end" }, String(label)));
    svg.append(s("rect", { x: left, y: y + 4, width: scale(v), height: row - 10, class: "bar" }));
    if (e) {
      const x1 = left + scale(v - e), x2 = left + scale(v + e), mid = y + row / 2 - 1;
      svg.append(s("line", { x1, x2, y1: mid, y2: mid, class: "whisker" }));
    }
    svg.append(s("text", { x: left + scale(v + e) + 6, y: y + 16 }, fmt(v)));
  });
  return svg;
}

// Cumulative lines over time: series = {name: [[Date, value], ...]}.
export function lineChart(title, series) {
  const width = 560, height = 220, pad = 40;
  const points = Object.values(series).flat();
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title,
    class: "chart" }, s("title", {}, title));
  if (!points.length) return svg;
  const t0 = Math.min(...points.map((p) => p[0])), t1 = Math.max(...points.map((p) => p[0]));
  const vmax = Math.max(1e-9, ...points.map((p) => p[1]));
  const x = (t) => pad + ((width - 2 * pad) * (t - t0)) / Math.max(1, t1 - t0);
  const y = (v) => height - pad - ((height - 2 * pad) * v) / vmax;
  svg.append(s("line", { x1: pad, x2: width - pad, y1: height - pad, y2: height - pad,
    class: "axis" }), s("text", { x: 4, y: pad - 8 }, `ε ${fmt(vmax)}`),
  s("text", { x: pad, y: height - pad + 16 }, new Date(t0).toISOString().slice(0, 16)),
  s("text", { x: width - pad, y: height - pad + 16, "text-anchor": "end" },
    new Date(t1).toISOString().slice(0, 16)));
  Object.entries(series).forEach(([name, pts], i) => {
    const d = pts.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`);
    svg.append(s("path", { d: d.join(" "), class: `line c${i % 6}` }));
    svg.append(s("text", { x: width - pad + 4, y: y(pts.at(-1)[1]), class: `c${i % 6}` }, name));
  });
  return svg;
}

// Budget gauge: a native <meter> (announced by screen readers) with the numbers beside it.
export function gauge(label, spent, limit) {
  const meter = h("meter", { min: 0, max: limit, value: spent, low: limit * 0.6,
    high: limit * 0.85, optimum: 0 });
  meter.id = `g${++nextId}`;
  return h("div", { className: "gauge" }, h("label", { htmlFor: meter.id, text: label }), meter,
    h("span", { text: `ε ${fmt(spent)} of ${fmt(limit)} spent, ${fmt(limit - spent)} left` }));
}

// CSV for a spreadsheet (RFC 4180 quoting). A text cell a spreadsheet would read as a formula
// (it begins with = + - @, TAB, CR or LF) gets a leading apostrophe, as the gateway's audit CSV
// export does (OWASP "CSV injection"); numbers are written as they are.
const FORMULA = /^[=+\-@\t\r\n]/;

export function toCsv(columns, rows) {
  const cell = (v) => {
    let t = v === null || v === undefined ? "" : String(v);
    if (typeof v === "string" && FORMULA.test(t)) t = `'${t}`;
    return /[",\n\r]/.test(t) ? `"${t.replaceAll('"', '""')}"` : t;
  };
  return [columns, ...rows].map((r) => r.map(cell).join(",")).join("\r\n") + "\r\n";
}

export function download(filename, blob) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename, className: "hidden" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// Tabs: [[label, render(panel)]]; arrow keys move between tabs.
export function tabs(root, items, label) {
  const list = h("div", { role: "tablist", "aria-label": label, className: "tabs" });
  const panel = h("section", { role: "tabpanel", tabIndex: -1, className: "panel" });
  const buttons = items.map(([name, render], i) => h("button", {
    role: "tab", type: "button", text: name, id: `tab-${name.toLowerCase().replaceAll(" ", "-")}`,
    onclick: () => open(i),
    onkeydown: (ev) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[ev.key];
      if (step) open((i + step + items.length) % items.length, true);
    },
  }));
  function open(i, focus = false) {
    buttons.forEach((b, j) => {
      b.setAttribute("aria-selected", String(i === j));
      b.tabIndex = i === j ? 0 : -1;
    });
    if (focus) buttons[i].focus();
    panel.setAttribute("aria-labelledby", buttons[i].id);
    panel.replaceChildren();
    Promise.resolve(items[i][1](panel)).catch((err) => panel.append(errorBox(err)));
  }
  list.append(...buttons);
  root.replaceChildren(list, panel);
  open(0);
}

export function errorBox(err) {
  return h("p", { className: "error", role: "alert", text: err.message || String(err) });
}

// A modal asking for a required reason (and optional extra fields); resolves to values or null.
export function askReason(title, extra = []) {
  return new Promise((resolve) => {
    const reason = h("textarea", { name: "reason", required: true, rows: 3 });
    const form = h("form", { method: "dialog" }, h("h2", { text: title }),
      ...extra.map(([label, el]) => field(label, el)), field("Reason (required)", reason),
      h("div", { className: "actions" },
        h("button", { type: "submit", value: "ok", text: "Confirm" }),
        h("button", { type: "button", value: "cancel", text: "Cancel",
          onclick: () => dialog.close("cancel") })));
    const dialog = h("dialog", {}, form);
    dialog.addEventListener("close", () => {
      dialog.remove();
      if (dialog.returnValue !== "ok") return resolve(null);
      resolve(Object.fromEntries(new FormData(form)));
    });
    document.body.append(dialog);
    dialog.showModal();
    reason.focus();
  });
}

export function say(text) {
  document.getElementById("status").textContent = shown(text);
}
