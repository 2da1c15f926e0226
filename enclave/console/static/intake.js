// Steward: bulk licence import from CSV (a dry run lists every problem by row and column), and
// registering a dataset from a file in the data folder: the gateway proposes column names and
// types from the file's schema; bounds and category values are entered here, never read from
// the data; the dataset is then submitted through the ordinary dataset PUT.
import { api, qs } from "./api.js";
import { errorBox, field, h, input, say, select, showProblems, shown, table } from "./ui.js";

const COLUMN_TYPES = ["identifier", "int", "float", "category", "date"];

export function importPage(panel) {
  const general = h("div");
  const csv = h("textarea", { name: "csv", rows: 10, className: "code", required: true,
    placeholder: "subject,organization,tier,datasets,purpose,jurisdiction,valid_until" });
  const file = h("input", { type: "file", name: "file", accept: ".csv,text/csv" });
  file.addEventListener("change", async () => { csv.value = await file.files[0]?.text() ?? ""; });
  const reason = h("textarea", { name: "reason", rows: 2 });
  const result = h("div", { id: "import-result" });
  const send = async (dryRun) => {
    result.replaceChildren();
    try {
      const out = await api(`/v1/admin/licences/import${qs({
        dry_run: dryRun ? "true" : "", reason: reason.value.trim() })}`,
      { method: "POST", text: csv.value, type: "text/csv" });
      showProblems(form, null, general);
      result.replaceChildren(table(["id", "subject", "organisation", "tier", "datasets", "until"],
        out.licences.map((l) => [l.id, l.subject, l.organization, l.tier, l.datasets,
          l.valid_until.slice(0, 10)]),
        `${out.count} licence(s) ${dryRun ? "would be issued: no problem found" : "issued"}`));
      say(dryRun ? `Dry run: ${out.count} licence(s), no problem` : `Issued ${out.count}`);
    } catch (err) {
      showProblems(form, null, general);
      result.replaceChildren(h("div", { className: "card", role: "alert" },
        h("h3", { className: "error", text: `${err.problems.length || 1} problem(s); nothing ${
          dryRun ? "would be" : "was"} issued` }),
        h("ul", { id: "import-problems" }, (err.problems.length ? err.problems : [err.message])
          .map((p) => h("li", { text: p })))));
    }
  };
  const form = h("form", { className: "card", id: "import-form", onsubmit: (ev) => {
    ev.preventDefault();
    send(false);
  } },
  h("h2", { text: "Import licences from CSV" }), general,
  h("p", { className: "note", text: "One licence per row; datasets separated by ;. Every row " +
    "is checked before anything is issued: all rows, or none." }),
  field("CSV file", file), field("CSV text", csv),
  field("Reason (required to issue; kept on each licence's audit record)", reason),
  h("div", { className: "actions" },
    h("button", { type: "button", id: "dry-run", text: "Dry run (check only)",
      onclick: () => send(true) }),
    h("button", { type: "submit", text: "Import" })));
  panel.append(form, result);
}

export async function registerPage(panel) {
  const [{ files }, { tiers }] = await Promise.all([
    api("/v1/admin/data-files"), api("/v1/admin/tiers")]);
  const source = select("source", files);
  const area = h("div", { id: "register-area" });
  const propose = async () => {
    try {
      const proposal = await api(`/v1/admin/data-files/schema${qs({ source: source.value })}`);
      area.replaceChildren(registerForm(proposal, tiers));
    } catch (err) {
      area.replaceChildren(errorBox(err));
    }
  };
  panel.append(h("form", { className: "card filters", onsubmit: (ev) => {
    ev.preventDefault();
    propose();
  } }, h("h2", { text: "Register a dataset from a file" }),
  files.length ? field("File in the data folder", source)
    : h("p", { text: "No Parquet or CSV file in the data folder." }),
  h("button", { type: "submit", text: "Propose columns", disabled: !files.length })), area);
}

function registerForm(proposal, tiers) {
  const general = h("div");
  const stem = proposal.source.split("/").at(-1).replace(/\.[^.]*$/, "").toLowerCase()
    .replace(/[^a-z0-9_]/g, "_").replace(/^[^a-z]+/, "");
  const name = input("name", { required: true, value: stem });
  const unit = select("privacy_unit", proposal.columns.map((c) => c.name));
  const rows = proposal.columns.map(columnRow);
  // the privacy unit is the identifier column: its row follows the choice
  const markUnit = () => rows.forEach((r) => r.markUnit(r.name === unit.value));
  unit.addEventListener("change", markUnit);
  const form = h("form", { className: "card", id: "register-form" },
    h("h2", { text: `New dataset from ${proposal.source}` }), general,
    h("p", { className: "note", text: "Names and types come from the file's schema. Bounds " +
      "and category values are public metadata you declare: they are never read from the data." }),
    h("div", { className: "grid" }, field("Dataset name", name),
      field("Description", input("description")),
      field("Privacy unit (the identifier column)", unit),
      field("Rows per unit kept (k)", input("max_rows_per_unit",
        { type: "number", min: "1", value: "1", required: true })),
      field("Minimum tier", select("min_tier", tiers.map((t) => t.name)))),
    table(["include", "column", "source type", "type", "bounds (low, high)", "values"],
      rows.map((r) => r.cells), "Columns"),
    field("Reason (kept in the audit log)", h("textarea", { name: "reason", rows: 2,
      required: true })),
    h("button", { type: "submit", text: "Register dataset" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    const columns = Object.fromEntries(rows.filter((r) => r.included())
      .map((r) => [r.name, r.read(data.privacy_unit)]));
    const body = { name: data.name, description: data.description, source: proposal.source,
      privacy_unit: data.privacy_unit, max_rows_per_unit: Number(data.max_rows_per_unit),
      min_tier: data.min_tier, columns, reason: data.reason };
    try {
      await api(`/v1/admin/datasets/${encodeURIComponent(data.name)}`,
        { method: "PUT", body: { ...body, version: 0 } });
      showProblems(form, null, general);
      general.append(h("p", { className: "ok", text: `Registered dataset ${data.name}.` }));
      say(`Registered ${data.name}`);
    } catch (err) {
      showProblems(form, err, general);
    }
  });
  markUnit();
  return form;
}

// One proposed column: include it or not, its type, and what the steward declares for it.
function columnRow(col) {
  const key = `columns.${col.name}`;
  const include = h("input", { type: "checkbox", name: `${key}.include`, checked: !!col.type,
    "aria-label": `Include ${col.name}` });
  const type = select(`${key}.type`, COLUMN_TYPES, col.type ?? "category");
  type.setAttribute("aria-label", shown(`${col.name} type`));
  const low = input(`${key}.low`, { size: 10, "aria-label": `${col.name} lower bound` });
  const high = input(`${key}.high`, { size: 10, "aria-label": `${col.name} upper bound` });
  const values = input(`${key}.values`, { size: 24, placeholder: "a, b, c",
    "aria-label": `${col.name} values, comma separated` });
  const slot = (name, ...els) => h("div", { "data-field": name }, ...els,
    h("ul", { className: "problems", "data-for": name }));
  const typed = (text) => (type.value === "date" || !/^-?[0-9.eE+]+$/.test(text.trim())
    ? text.trim() : Number(text));
  return {
    name: col.name,
    included: () => include.checked,
    markUnit(isUnit) {
      if (isUnit) include.checked = true;
      type.value = isUnit ? "identifier" : col.type ?? "category";
      type.disabled = isUnit;
    },
    cells: [include, col.name, col.source_type, slot(`${key}.type`, type),
      slot(`${key}.bounds`, low, " ", high), slot(`${key}.values`, values)],
    read(unitName) {
      if (col.name === unitName) return { type: "identifier" };
      const out = { type: type.value };
      if (["int", "float", "date"].includes(type.value)) {
        out.bounds = [typed(low.value), typed(high.value)];
      }
      if (type.value === "category") {
        out.values = values.value.split(",").map((v) => v.trim()).filter(Boolean);
      }
      return out;
    },
  };
}
