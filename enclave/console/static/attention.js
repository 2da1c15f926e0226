// What needs attention, computed in the browser from the audit log (and, for a caller who is
// also a steward, the tiers' budgets, plus the grants recorded in the log): licences near budget exhaustion, refusal spikes per
// subject, licences that expire soon.
import { allPages, api } from "./api.js";
import { session } from "./auth.js";
import { fmt, h, input, record, table } from "./ui.js";

const HOUR = 3600e3, DAY = 24 * HOUR;

export async function attention(panel) {
  const events = await allPages("/v1/audit/events", "events", 20000);
  const budgets = await tierBudgets();
  const licences = record();
  for (const e of events) {
    if (!e.licence_id) continue;
    const l = (licences[e.licence_id] ??= { actor: e.actor, tier: e.tier, eps: 0, granted: 0,
      budgetRefusals: 0, validUntil: null, status: "active" });
    if (e.tier) l.tier = e.tier;
    if (e.action === "query" && e.outcome === "ok" && !e.cached) l.eps += e.epsilon;
    if (e.action === "licence.grant" && e.outcome === "ok") {
      l.granted += Number(e.detail?.grant?.epsilon || 0); // a top-up raises the limit
    }
    if (e.outcome === "denied" && /budget/i.test(e.reason || "")) l.budgetRefusals += 1;
    const change = e.action === "licence.create" ? e.detail?.after : e.detail?.changes;
    if (e.outcome === "ok" && change) {
      if (change.valid_until) l.validUntil = change.valid_until;
      if (change.status) l.status = change.status;
    }
  }
  const near = Object.entries(licences).map(([id, l]) => {
    const limit = budgets[l.tier] === undefined ? undefined : budgets[l.tier] + l.granted;
    return [id, l.actor, l.tier, l.eps, limit, l.budgetRefusals, limit ? l.eps / limit : null];
  }).filter((r) => r[5] > 0 || (r[6] !== null && r[6] >= 0.8));

  const horizon = input("days", { type: "number", min: "1", value: "30" });
  const expiring = h("div");
  const showExpiring = () => {
    const until = Date.now() + Number(horizon.value || 0) * DAY;
    expiring.replaceChildren(table(["licence", "subject", "valid until"],
      Object.entries(licences).filter(([, l]) => l.status !== "revoked" && l.validUntil
        && Date.parse(l.validUntil) >= Date.now() && Date.parse(l.validUntil) <= until)
        .map(([id, l]) => [id, l.actor, l.validUntil]), "Expiring licences"));
  };
  horizon.addEventListener("input", showExpiring);
  horizon.id = "expiring-days";
  showExpiring();

  panel.append(h("h2", { text: "Needs attention" }),
    table(["licence", "subject", "tier", "ε spent", "budget ε (tier + grants)", "budget refusals",
      "used"],
      near.map((r) => [...r.slice(0, 6), r[6] === null ? "budget unknown"
        : `${Math.round(r[6] * 100)}%`]), "Licences near budget exhaustion (≥ 80% or refused)"),
    budgets.known ? null : h("p", { className: "note", text: "Tier budgets are read with the "
      + "admin role; without it, licences are listed when a query was refused for budget." }),
    table(["subject", "refusals in the busiest hour", "refusals in all"], spikes(events),
      "Refusal spikes (5 or more refusals within one hour)"),
    h("div", { className: "filters" }, h("label", { htmlFor: "expiring-days",
      text: "Expiring within (days)" }), horizon), expiring);
}

async function tierBudgets() {
  if (!session.roles.includes("admin")) return record(); // without the role: a refusal
  try {
    const { tiers } = await api("/v1/admin/tiers");
    return Object.assign(record(), Object.fromEntries(tiers.map((t) => [t.name, t.budget.epsilon])),
      { known: true });
  } catch {
    return record();
  }
}

function spikes(events) {
  const bySubject = record();
  for (const e of events) {
    if (e.outcome === "denied") (bySubject[e.actor] ??= []).push(Date.parse(e.ts));
  }
  return Object.entries(bySubject).map(([actor, times]) => {
    times.sort((a, b) => a - b);
    let best = 0;
    for (let i = 0, j = 0; j < times.length; j++) {
      while (times[j] - times[i] > HOUR) i++;
      best = Math.max(best, j - i + 1);
    }
    return [actor, best, times.length];
  }).filter((r) => r[1] >= 5).map((r) => r.map(fmt));
}
