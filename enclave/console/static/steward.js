// Steward (role admin): licences (filter, issue, suspend, reactivate, revoke, extend, re-tier,
// each with a required reason; spend and grants per licence), tiers and datasets (edit with
// every problem shown next to its field, version history with a diff), token revocations,
// bulk licence import, registering a dataset from a data file, and four-eyes proposals with
// the incident controls (governance.js).
import { api, qs } from "./api.js";
import { proposalsPage } from "./governance.js";
import { licenceBudget } from "./grants.js";
import { importPage, registerPage } from "./intake.js";
import {
  askReason, errorBox, field, fmt, h, input, say, select, showProblems, table, tabs,
} from "./ui.js";
import { diffTable, flatten, policyForm, unflatten } from "./policy.js";

export function render(root) {
  tabs(root, [
    ["Licences", licences],
    ["Tiers", (p) => policies(p, "tier")],
    ["Datasets", (p) => policies(p, "dataset")],
    ["Revocations", revocations],
    ["Import", importPage],
    ["Register dataset", registerPage],
    ["Proposals", proposalsPage],
  ], "Steward");
}

const STATUSES = ["", "active", "suspended", "revoked"];

async function licences(panel) {
  const [{ tiers }, { datasets }] = await Promise.all([
    api("/v1/admin/tiers"), api("/v1/admin/datasets")]);
  const f = {
    subject: input("subject"), organization: input("organization"),
    status: select("status", STATUSES.map((s) => [s, s || "any"])),
    tier: select("tier", [["", "any"], ...tiers.map((t) => [t.name, t.name])]),
    expiring: input("expiring_within_days", { type: "number", min: "0" }),
  };
  const list = h("div", { id: "licence-list" });
  const detail = h("div", { id: "licence-detail" });
  async function refresh() {
    const data = await api(`/v1/admin/licences${qs({
      subject: f.subject.value, expiring_within_days: f.expiring.value })}`);
    const keep = (l) => (!f.status.value || l.status === f.status.value)
      && (!f.tier.value || l.tier === f.tier.value)
      && l.organization.toLowerCase().includes(f.organization.value.toLowerCase());
    const rows = data.licences.filter(keep);
    list.replaceChildren(table(
      ["id", "subject", "organisation", "tier", "datasets", "status", "valid until", "actions"],
      rows.map((l) => [l.id, l.subject, l.organization, l.tier, l.datasets, status(l),
        l.valid_until.slice(0, 10), actions(l, tiers, refresh, detail)]),
      `${rows.length} licence(s)`));
  }
  const filters = h("form", { className: "card filters", onsubmit: (ev) => {
    ev.preventDefault();
    refresh().catch((err) => list.replaceChildren(errorBox(err)));
  } }, field("Subject", f.subject), field("Organisation", f.organization),
  field("Status", f.status), field("Tier", f.tier), field("Expiring within (days)", f.expiring),
  h("button", { type: "submit", text: "Filter" }));
  panel.append(h("h2", { text: "Licences" }), filters, list, detail,
    issueForm(tiers, datasets, refresh));
  await refresh();
}

function status(l) {
  const why = l.status_reason;
  return why ? `${l.status}: ${why.reason ?? "no reason recorded"} (${why.by}, ${
    why.at.slice(0, 10)})` : l.status;
}

function actions(l, tiers, refresh, detail) {
  const patch = async (title, change, extra = []) => {
    const answer = await askReason(`${title} ${l.id}`, extra);
    if (!answer) return;
    try {
      await api(`/v1/admin/licences/${encodeURIComponent(l.id)}`, {
        method: "PATCH", body: { ...change(answer), reason: answer.reason } });
      say(`${title}: ${l.id} done`);
      await refresh();
    } catch (err) {
      alertError(err);
    }
  };
  const button = (text, onclick) => h("button", { type: "button", text, onclick,
    "aria-label": `${text} ${l.id}` });
  const budget = button("Budget", () => licenceBudget(detail, l)
    .then(() => detail.querySelector("h2")?.scrollIntoView())
    .catch((err) => detail.replaceChildren(errorBox(err))));
  if (l.status === "revoked") return h("span", { className: "row-actions" }, budget, "final");
  return h("span", { className: "row-actions" }, budget,
    l.status === "active" ? button("Suspend", () => patch("Suspend", () =>
      ({ status: "suspended" }))) : button("Reactivate", () => patch("Reactivate", () =>
      ({ status: "active" }))),
    button("Revoke", () => patch("Revoke", () => ({ status: "revoked" }))),
    button("Extend", () => patch("Extend", (a) => ({ valid_until: a.valid_until }),
      [["New end date", input("valid_until", { type: "date", required: true })]])),
    button("Re-tier", () => patch("Re-tier", (a) => ({ tier: a.tier }),
      [["New tier", select("tier", tiers.map((t) => t.name), l.tier)]])));
}

function alertError(err) {
  say(`Refused: ${err.message}`);
  document.getElementById("main").prepend(errorBox(err));
}

function issueForm(tiers, datasets, refresh) {
  const general = h("div");
  const boxes = datasets.map((d) => h("label", { className: "check" },
    h("input", { type: "checkbox", name: "datasets", value: d.name }), ` ${d.name}`));
  const form = h("form", { className: "card grid", id: "issue-form" },
    h("h2", { text: "Issue a licence" }), general,
    field("Subject (the token's sub)", input("subject", { required: true })),
    field("Organisation", input("organization", { required: true })),
    field("Tier", select("tier", tiers.map((t) => t.name))),
    h("fieldset", { "data-field": "datasets" }, h("legend", { text: "Datasets" }), ...boxes,
      h("ul", { className: "problems", "data-for": "datasets" })),
    field("Purpose", input("purpose", { required: true })),
    field("Jurisdiction (two letters)", input("jurisdiction", { required: true, maxLength: 2 })),
    field("Valid until", input("valid_until", { type: "date", required: true })),
    field("Reason (kept in the audit log; a reissue waits for a second admin)",
      input("reason")),
    h("button", { type: "submit", text: "Issue" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const body = Object.fromEntries([...data].filter(([k, v]) => k !== "datasets"
      && (k !== "reason" || v.trim())));
    body.datasets = data.getAll("datasets");
    try {
      const out = await api("/v1/admin/licences", { method: "POST", body });
      showProblems(form, null, general);
      form.reset();
      say(out.kind ? `Proposed ${out.id}: a second admin approves the reissue`
        : `Issued ${out.id}`);
      await refresh();
    } catch (err) {
      showProblems(form, err, general);
    }
  });
  return form;
}

async function policies(panel, kind) {
  const data = await api(`/v1/admin/${kind}s`);
  const area = h("div", { className: "policy-area" });
  const reload = async () => {
    panel.replaceChildren();
    await policies(panel, kind);
  };
  panel.append(h("h2", { text: kind === "tier" ? "Tiers" : "Datasets" }),
    table(["name", "version", "description", ""], data[`${kind}s`].map((p) => [p.name, p.version,
      p.retired ? `${p.description} (retired)` : p.description,
      h("span", { className: "row-actions" },
        h("button", { type: "button", text: "Edit", "aria-label": `Edit ${p.name}`,
          onclick: () => edit(area, kind, p.name) }),
        h("button", { type: "button", text: "History", "aria-label": `History of ${p.name}`,
          onclick: () => versions(area, kind, p.name) }),
        kind === "dataset" ? retireButton(p, reload) : null)])), area);
}

// Retire (no new queries; history kept) or restore a dataset: a new version, with a reason.
function retireButton(dataset, refresh) {
  const retire = !dataset.retired;
  const text = retire ? "Retire" : "Restore";
  return h("button", { type: "button", text, "aria-label": `${text} ${dataset.name}`,
    onclick: async () => {
      const answer = await askReason(`${text} dataset ${dataset.name}`);
      if (!answer) return;
      const path = `/v1/admin/datasets/${encodeURIComponent(dataset.name)}`;
      try {
        const current = await api(path);
        await api(path, { method: "PUT", body: { ...current, retired: retire,
          reason: answer.reason } });
        say(`${text}d ${dataset.name}`);
        await refresh();
      } catch (err) {
        alertError(err);
      }
    } });
}

async function edit(area, kind, name) {
  const current = await api(`/v1/admin/${kind}s/${encodeURIComponent(name)}`);
  let { version, ...body } = current;
  delete body.created_at; delete body.changed_by; delete body.versions;
  const general = h("div");
  const { form, read } = policyForm(body);
  const reason = h("textarea", { name: "reason", rows: 2 });
  form.prepend(h("h3", { text: `Edit ${kind} ${name} (version ${version})` }), general);
  form.append(field("Reason (required when the budget changes)", reason, "reason"),
    h("button", { type: "submit", text: "Save new version" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const next = { ...unflatten(read()), version }; // 409 if someone changed it since
    if (reason.value.trim()) next.reason = reason.value.trim();
    try {
      const saved = await api(`/v1/admin/${kind}s/${encodeURIComponent(name)}`,
        { method: "PUT", body: next });
      showProblems(form, null, general);
      version = saved.version;
      say(`Saved ${kind} ${name} as version ${saved.version}`);
      general.append(h("p", { className: "ok", text: `Saved as version ${saved.version}.` }));
    } catch (err) {
      showProblems(form, err, general);
    }
  });
  area.replaceChildren(form);
  form.querySelector("input, select, textarea")?.focus();
}

async function versions(area, kind, name) {
  const path = `/v1/admin/${kind}s/${encodeURIComponent(name)}`;
  const current = await api(path);
  const all = current.versions || [current.version];
  const a = select("a", all.map(String), String(all.at(-2) ?? all[0]));
  const b = select("b", all.map(String), String(all.at(-1)));
  const out = h("div", { id: "diff" });
  const show = async () => {
    const [va, vb] = await Promise.all([a.value, b.value].map((v) => api(`${path}?version=${v}`)));
    out.replaceChildren(diffTable(flatten(strip(va)), flatten(strip(vb)), a.value, b.value));
  };
  area.replaceChildren(h("div", { className: "card" },
    h("h3", { text: `History of ${kind} ${name}: versions ${all.join(", ")}` }),
    h("div", { className: "filters" }, field("From version", a), field("To version", b),
      h("button", { type: "button", text: "Compare", onclick: () => show().catch((err) =>
        out.replaceChildren(errorBox(err))) })), out));
  await show();
}

const strip = ({ version, created_at, changed_by, versions, ...rest }) =>
  ({ ...rest, _meta: `version ${version} by ${changed_by ?? "?"} at ${fmt(created_at)}` });

function revocations(panel) {
  const general = h("div");
  const done = h("ul", { id: "revoked" });
  const form = h("form", { className: "card" }, h("h2", { text: "Revoke a token" }), general,
    field("Token id (jti)", input("jti", { required: true })),
    field("Reason", h("textarea", { name: "reason", rows: 2, required: true })),
    h("button", { type: "submit", text: "Revoke token" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = Object.fromEntries(new FormData(form));
    try {
      await api("/v1/admin/revocations", { method: "POST", body });
      showProblems(form, null, general);
      done.append(h("li", { text: `${body.jti}: ${body.reason}` }));
      form.reset();
    } catch (err) {
      showProblems(form, err, general);
    }
  });
  panel.append(form, h("h3", { text: "Revoked in this session" }), done);
}
