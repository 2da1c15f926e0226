// Steward: one licence's spend per dataset (exact decimal text from the API), its budget
// grants, and a form to grant more (a reason is required; every problem shown by its field).
import { api } from "./api.js";
import { field, gauge, h, input, say, select, showProblems, table } from "./ui.js";

export async function licenceBudget(area, licence) {
  const path = `/v1/admin/licences/${encodeURIComponent(licence.id)}`;
  const [{ budgets }, { grants }] = await Promise.all([
    api(`${path}/budget`), api(`${path}/grants`)]);
  const rows = budgets.map((b) => [b.dataset, b.epsilon_tier_budget, b.epsilon_granted,
    b.epsilon_limit, b.epsilon_spent, b.epsilon_remaining, b.delta_limit, b.delta_spent,
    b.delta_remaining, b.renews ?? "never"]);
  const card = h("section", { className: "card", id: "licence-budget",
    "aria-label": `Budget of ${licence.id}` },
  h("h2", { text: `Budget of ${licence.id} (${licence.subject}, tier ${licence.tier})` }),
  ...budgets.map((b) => gauge(`${b.dataset}: ε spent of the limit`, Number(b.epsilon_spent),
    Number(b.epsilon_limit))),
  table(["dataset", "ε tier budget", "ε granted", "ε limit", "ε spent", "ε remaining",
    "δ limit", "δ spent", "δ remaining", "renews"], rows, "Spend per dataset"),
  table(["when", "dataset", "ε", "δ", "by", "reason", "audit seq"],
    grants.map((g) => [g.created_at, g.dataset, g.epsilon, g.delta, g.actor, g.reason,
      g.audit_seq]), `${grants.length} grant(s)`),
  licence.status === "revoked" ? null : grantForm(licence, () => licenceBudget(area, licence)));
  area.replaceChildren(card);
}

function grantForm(licence, refresh) {
  const general = h("div");
  const form = h("form", { className: "card grid", id: "grant-form" },
    h("h2", { text: "Grant more budget" }), general,
    field("Dataset", select("dataset", licence.datasets)),
    field("Epsilon to add", input("epsilon", { inputMode: "decimal", required: true })),
    field("Delta to add (optional)", input("delta", { inputMode: "decimal" })),
    field("Reason (required)", h("textarea", { name: "reason", rows: 2, required: true })),
    h("button", { type: "submit", text: "Grant" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    const body = { dataset: data.dataset, epsilon: number(data.epsilon), reason: data.reason };
    if (data.delta.trim()) body.delta = number(data.delta);
    try {
      const made = await api(`/v1/admin/licences/${encodeURIComponent(licence.id)}/grants`,
        { method: "POST", body });
      say(`Granted ε ${made.epsilon} on ${made.dataset} to ${licence.id}`);
      await refresh();
    } catch (err) {
      showProblems(form, err, general);
    }
  });
  return form;
}

// A number as typed (the API checks it and says what is wrong with it); text stays text.
const number = (text) => (/^\s*[0-9.eE+-]+\s*$/.test(text) ? Number(text) : text);
