// Researcher workbench: datasets and their public schema, SQL with a live estimate (nothing is
// spent), run, results with ±ci95 and a bar chart, budget gauges, own history, CSV download.
import { api, qs } from "./api.js";
import {
  barChart, debounce, download, errorBox, field, fmt, gauge, h, input, own, say, select, table,
  tabs, toCsv,
} from "./ui.js";

const ci = (value) => fmt(Number(Number(value).toPrecision(3)));

export function render(root) {
  tabs(root, [["Workbench", workbench], ["History", history]], "Researcher");
}

// A shared budget layer (subject, organisation, dataset) that binds tighter than the licence's
// own: say which, and what is left of it (rounded down for shared layers by the gateway).
function layerNote(budget) {
  const layer = budget && budget.binding_layer;
  return layer && layer !== "licence" ? ` (limited by the ${layer} budget)` : "";
}

function binding(b) {
  const note = layerNote(b);
  return note && h("p", { className: "note binding",
    text: `${b.dataset}: ε ${fmt(b.epsilon_remaining)} left${note}` });
}

async function workbench(panel) {
  const [{ datasets }, budgets] = await Promise.all([api("/v1/datasets"), api("/v1/budget")]);
  if (!datasets.length) {
    panel.append(h("p", { text: "No active licence covers a dataset yet." }));
    return;
  }
  const gauges = h("section", { className: "card", "aria-labelledby": "budget-h" });
  const showBudgets = (list) => gauges.replaceChildren(h("h2", { id: "budget-h", text: "Budget" }),
    ...list.flatMap((b) => [gauge(`${b.dataset} (${b.licence_id}, ${b.licence_status})`,
      b.epsilon_spent, b.epsilon_limit), binding(b)].filter(Boolean)));
  showBudgets(budgets.budgets);

  const dataset = select("dataset", datasets.map((d) => d.name));
  const schema = h("div", { className: "schema" });
  const sql = h("textarea", { name: "sql", rows: 5, spellcheck: false, className: "code" });
  const epsilon = input("epsilon", { type: "number", step: "0.01", min: "0.01", value: "0.5" });
  const estimate = h("div", { id: "estimate", className: "estimate", "aria-live": "polite" });
  const results = h("section", { id: "results", "aria-live": "polite" });
  const body = () => ({ dataset: dataset.value, sql: sql.value, epsilon: Number(epsilon.value) });

  const showSchema = () => {
    const d = datasets.find((x) => x.name === dataset.value);
    const cat = Object.entries(d.columns).find(([, c]) => c.type === "category")?.[0];
    sql.value ||= cat ? `SELECT ${cat}, COUNT(*) AS n FROM ${d.name} GROUP BY ${cat}`
      : `SELECT COUNT(*) AS n FROM ${d.name}`;
    schema.replaceChildren(
      h("p", { text: d.description }),
      h("p", { text: `Privacy unit: ${d.privacy_unit} · k (rows per unit kept): ${
        d.max_rows_per_unit} · minimum tier: ${fmt(d.min_tier)}` }),
      table(["column", "type", "bounds", "values"], Object.entries(d.columns).map(
        ([name, c]) => [name, c.type, c.bounds, c.values]), `Columns of ${d.name}`));
  };
  const runEstimate = debounce(async () => {
    if (!sql.value.trim()) return estimate.replaceChildren();
    estimate.replaceChildren(h("p", { text: "Estimating…" }));
    try {
      const e = await api("/v1/queries/estimate", { method: "POST", body: body() });
      const cis = Object.entries(e.accuracy || {}).map(([col, a]) => `${col} ±${ci(a.ci95)}`);
      estimate.replaceChildren(
        h("p", { className: e.within_budget ? "ok" : "error", text:
          `Cost ε ${fmt(e.epsilon)}, δ ${fmt(e.delta)} · ${e.within_budget
            ? "within budget" : "over budget"}${e.cached ? " · cached: a repeat, free" : ""}` }),
        h("p", { text: `ci95: ${cis.join(", ") || "—"} · remaining ε ${
          fmt(e.budget.epsilon_remaining)}${layerNote(e.budget)}` }));
    } catch (err) {
      estimate.replaceChildren(errorBox(err));
    }
  }, 400);
  const run = async (ev) => {
    ev.preventDefault();
    results.replaceChildren(h("p", { text: "Running…" }));
    try {
      const r = await api("/v1/queries", { method: "POST", body: body() });
      showResult(results, r);
      say(`Charged ε ${fmt(r.epsilon_spent)}`);
      showBudgets((await api("/v1/budget")).budgets);
      runEstimate();
    } catch (err) {
      results.replaceChildren(errorBox(err));
    }
  };
  for (const el of [sql, epsilon]) el.addEventListener("input", runEstimate);
  dataset.addEventListener("change", () => { showSchema(); runEstimate(); });
  showSchema();
  runEstimate();
  panel.append(h("div", { className: "columns" },
    h("div", {}, h("section", { className: "card" }, h("h2", { text: "Dataset" }),
      field("Dataset", dataset), schema), gauges),
    h("div", {}, h("form", { className: "card", onsubmit: run },
      h("h2", { text: "Query" }), field("SQL", sql), field("Epsilon for this query", epsilon),
      estimate, h("button", { type: "submit", id: "run", text: "Run (spends budget)" })),
    results)));
}

function showResult(results, r) {
  const aggs = r.columns.filter((c) => own(r.accuracy, c)); // an alias may be "constructor"
  const cell = (value, col) => (own(r.accuracy, col) && value !== null
    ? `${fmt(value)} ± ${ci(r.accuracy[col].ci95)}` : value);
  const rows = r.rows.map((row) => row.map((v, i) => cell(v, r.columns[i])));
  const charge = `Charged ε ${fmt(r.epsilon_spent)}, δ ${fmt(r.delta_spent)}${
    r.cached ? " (cached repeat: nothing spent)" : ""} · remaining ε ${
    fmt(r.budget.epsilon_remaining)}${layerNote(r.budget)} · ${r.suppressed_groups} group(s) suppressed`;
  const csv = () => download(`${r.query_id}.csv`, new Blob([toCsv(
    [...r.columns, ...aggs.map((c) => `${c}_ci95`)],
    r.rows.map((row) => [...row, ...aggs.map((c) => r.accuracy[c].ci95)]))], { type: "text/csv" }));
  const group = r.columns[0];
  const chartable = aggs.length && !aggs.includes(group) && r.rows.length > 1;
  const col = aggs[0];
  const idx = r.columns.indexOf(col);
  results.replaceChildren(h("div", { className: "card" },
    h("h2", { text: "Result" }),
    h("p", { id: "charge", className: "charge", text: charge }),
    table(r.columns, rows, `Query ${r.query_id} (values ± ci95 of the noise)`),
    chartable ? barChart(`${col} by ${group}`, r.rows.map((x) => x[0]),
      r.rows.map((x) => Number(x[idx]) || 0), r.rows.map(() => r.accuracy[col].ci95)) : null,
    h("button", { type: "button", id: "csv", text: "Download CSV", onclick: csv })));
}

async function history(panel) {
  const list = h("div");
  let cursor = "";
  const more = h("button", { type: "button", text: "More", hidden: true, onclick: () => load() });
  async function load() {
    const page = await api(`/v1/queries${qs({ limit: 50, cursor })}`);
    list.append(table(["seq", "time", "dataset", "SQL", "ε", "cached", "outcome", "reason"],
      page.queries.map((q) => [q.audit_seq, q.ts, q.dataset, q.sql, q.epsilon, q.cached,
        q.outcome, q.reason])));
    cursor = page.next_cursor;
    more.hidden = !cursor;
  }
  panel.append(h("h2", { text: "My queries" }), list, more);
  await load();
}
