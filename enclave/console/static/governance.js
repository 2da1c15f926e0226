// Steward: four-eyes proposals (the risks, who proposed it and why; approve or reject with a
// reason; a proposer's own approval is refused by the gateway) and incident controls (freeze
// a dataset, suspend an organisation; undoing either is proposed for a second admin).
import { api, qs } from "./api.js";
import { askReason, errorBox, field, h, input, say, select, showProblems, table } from "./ui.js";

const STATUSES = [["pending", "pending"], ["", "any"], ["approved", "approved"],
  ["rejected", "rejected"], ["expired", "expired"]];

export async function proposalsPage(panel) {
  const status = select("status", STATUSES);
  const list = h("div", { id: "proposal-list" });
  async function refresh() {
    const { proposals } = await api(`/v1/admin/proposals${qs({ status: status.value })}`);
    list.replaceChildren(table(
      ["id", "kind", "target", "risks", "proposed by", "reason", "expires", "status", "actions"],
      proposals.map((p) => [p.id, p.kind, p.target, p.risks.join("; "), p.proposer, p.reason,
        p.expires_at.slice(0, 16).replace("T", " "), decided(p), decide(p, refresh)]),
      `${proposals.length} proposal(s)`));
  }
  status.addEventListener("change", () => refresh().catch((err) =>
    list.replaceChildren(errorBox(err))));
  panel.append(h("h2", { text: "Proposals" }),
    h("p", { text: "Changes that raise risk wait here for a second admin." }),
    h("div", { className: "card filters" }, field("Status", status)), list,
    incidentForms(refresh));
  await refresh();
}

function decided(p) {
  return p.decided_by ? `${p.status} by ${p.decided_by}: ${p.decided_reason}` : p.status;
}

function decide(p, refresh) {
  if (p.status !== "pending") return "";
  const act = (verb) => async () => {
    // the dialog names what is decided, not only the proposal's id
    const answer = await askReason(
      `${verb[0].toUpperCase()}${verb.slice(1)} ${p.id}: ${p.kind} ${p.target}`);
    if (!answer) return;
    try {
      await api(`/v1/admin/proposals/${encodeURIComponent(p.id)}/${verb}`,
        { method: "POST", body: { reason: answer.reason } });
      say(`${p.id}: ${verb === "approve" ? "approved and applied" : "rejected"}`);
    } catch (err) {
      say(`${p.id}: ${err.message}`);
    }
    await refresh();
  };
  return h("span", { className: "actions" },
    h("button", { type: "button", text: "Approve", onclick: act("approve") }),
    h("button", { type: "button", text: "Reject", onclick: act("reject") }));
}

function incidentForms(refresh) {
  const form = (id, title, label, name, routes) => {
    const general = h("div");
    const target = input(name, { required: true });
    const reason = h("textarea", { name: "reason", rows: 2, required: true });
    const buttons = routes.map(([text, path]) => h("button", { type: "submit", text,
      value: path }));
    const el = h("form", { className: "card grid", id }, h("h2", { text: title }), general,
      field(label, target), field("Reason (required)", reason), ...buttons);
    el.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const path = ev.submitter.value.replace("{}", encodeURIComponent(target.value.trim()));
      try {
        const out = await api(path, { method: "POST", body: { reason: reason.value } });
        say(out.id ? `Proposed ${out.id}: a second admin approves it` : `${title}: done`);
        await refresh();
      } catch (err) {
        showProblems(el, err, general);
      }
    });
    return el;
  };
  return h("div", {},
    form("freeze-form", "Freeze a dataset", "Dataset", "dataset", [
      ["Freeze now", "/v1/admin/datasets/{}/freeze"],
      ["Propose unfreezing", "/v1/admin/datasets/{}/unfreeze"]]),
    form("suspend-form", "Suspend an organisation", "Organisation (exact)", "organisation", [
      ["Suspend its active licences now", "/v1/admin/organisations/{}/suspend"],
      ["Propose reactivating", "/v1/admin/organisations/{}/reactivate"]]));
}
