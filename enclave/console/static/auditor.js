// Auditor: the event stream (the API's filters, paged), chain verification with the signed
// head, export downloads, spend summaries with a chart over time, and what needs attention.
import { allPages, api, qs } from "./api.js";
import {
  download, errorBox, field, fmt, h, input, lineChart, record, select, table, tabs,
} from "./ui.js";
import { attention } from "./attention.js";

const ACTIONS = ["", "query", "query.estimate", "licence.create", "licence.update",
  "tier.update", "dataset.update", "revocation.create", "audit.export", "dataset.dummy", "request",
  "licence.grant", "licence.import", "dataset.schema"];
const OUTCOMES = ["", "ok", "denied", "error"];

export function render(root) {
  tabs(root, [["Events", events], ["Verify and export", verify], ["Summary", summary],
    ["Attention", attention]], "Auditor");
}

async function events(panel) {
  const f = {
    actor: input("actor"), dataset: input("dataset"), licence_id: input("licence_id"),
    action: select("action", ACTIONS.map((a) => [a, a || "any"])),
    outcome: select("outcome", OUTCOMES.map((o) => [o, o || "any"])),
    since: input("since", { placeholder: "2026-01-01" }),
    until: input("until", { placeholder: "2026-12-31T00:00:00Z" }),
  };
  const list = h("div", { id: "events" });
  const pager = h("p", { className: "pager" });
  const cursors = [""];
  async function load(page) {
    const params = Object.fromEntries(Object.entries(f).map(([k, el]) => [k, el.value.trim()]));
    const data = await api(`/v1/audit/events${qs({ ...params, limit: 50,
      cursor: cursors[page] })}`);
    cursors[page + 1] = data.next_cursor;
    list.replaceChildren(table(
      ["seq", "time", "actor", "action", "dataset", "licence", "outcome", "ε", "reason"],
      data.events.map((e) => [e.seq, e.ts, e.actor, e.action, e.dataset, e.licence_id,
        e.outcome, e.epsilon, e.reason]), `Events, page ${page + 1}`));
    pager.replaceChildren(
      h("button", { type: "button", text: "Previous page", disabled: page === 0,
        onclick: () => load(page - 1) }),
      h("button", { type: "button", text: "Next page", disabled: !data.next_cursor,
        onclick: () => load(page + 1) }));
  }
  const form = h("form", { className: "card filters", onsubmit: (ev) => {
    ev.preventDefault();
    cursors.length = 1;
    load(0).catch((err) => list.replaceChildren(errorBox(err)));
  } }, field("Actor", f.actor), field("Dataset", f.dataset), field("Licence", f.licence_id),
  field("Action", f.action), field("Outcome", f.outcome), field("Since", f.since),
  field("Until", f.until), h("button", { type: "submit", text: "Filter" }));
  panel.append(h("h2", { text: "Audit events" }), form, list, pager);
  await load(0);
}

function verify(panel) {
  const out = h("div", { id: "verdict", "aria-live": "polite" });
  const check = async () => {
    out.replaceChildren(h("p", { text: "Verifying the whole chain…" }));
    try {
      const v = await api("/v1/audit/verify");
      const head = v.signed_head || {};
      out.replaceChildren(h("p", { className: v.valid ? "ok" : "error", text: v.valid
        ? `Chain valid: ${v.count} records.` : `Chain broken at seq ${v.first_bad_seq}: ${v.reason}` }),
      v.valid ? table(["", ""], [["head hash", v.head], ["signed head seq", head.seq],
        ["key id", head.key_id], ["signed at", head.ts], ["signature", head.signature]],
      "Signed head") : null);
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  };
  const exportAs = (format) => async () => {
    try {
      const resp = await api(`/v1/audit/export?format=${format}`, { raw: true });
      const name = /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "");
      download(name ? name[1] : `audit.${format}`, await resp.blob());
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  };
  panel.append(h("div", { className: "card" }, h("h2", { text: "Chain verification" }),
    h("button", { type: "button", id: "verify", text: "Verify chain", onclick: check }), out),
  h("div", { className: "card" }, h("h2", { text: "Export" }),
    h("p", { text: "The whole log, with the signed head (the export is itself audited)." }),
    h("button", { type: "button", id: "export-jsonl", text: "Download JSONL",
      onclick: exportAs("jsonl") }),
    h("button", { type: "button", id: "export-csv", text: "Download CSV",
      onclick: exportAs("csv") })));
}

async function summary(panel) {
  const [s, releases] = await Promise.all([api("/v1/audit/summary"),
    allPages(`/v1/audit/events${qs({ action: "query", outcome: "ok" })}`, "events")]);
  const byDataset = record();
  for (const r of s.rows) {
    const d = (byDataset[r.dataset ?? "—"] ??= { eps: 0, releases: 0, refusals: 0 });
    d.eps += Number(r.epsilon_spent); d.releases += r.releases; d.refusals += r.refusals;
  }
  const byLicence = record(), series = record();
  for (const e of releases.filter((x) => !x.cached)) {
    const l = (byLicence[e.licence_id ?? "—"] ??= { actor: e.actor, eps: 0, n: 0 });
    l.eps += e.epsilon; l.n += 1;
    const line = (series[e.dataset] ??= []);
    line.push([Date.parse(e.ts), (line.at(-1)?.[1] ?? 0) + e.epsilon]);
  }
  panel.append(h("h2", { text: "Spend" }),
    h("div", { className: "card" }, lineChart("Cumulative epsilon spent over time, per dataset",
      series)),
    table(["dataset", "ε spent", "releases", "refusals"], Object.entries(byDataset)
      .map(([d, v]) => [d, v.eps, v.releases, v.refusals]), "Per dataset"),
    table(["licence", "subject", "ε spent", "releases"], Object.entries(byLicence)
      .map(([id, v]) => [id, v.actor, v.eps, v.n]), "Per licence"),
    table(["actor", "dataset", "ε spent", "δ spent", "releases", "cache hits", "refusals",
      "errors"], s.rows.map((r) => [r.actor, r.dataset, r.epsilon_spent, r.delta_spent,
      r.releases, r.cache_hits, r.refusals, r.errors]), `Per actor and dataset (totals: ε ${
      fmt(s.totals.epsilon_spent)})`));
}
