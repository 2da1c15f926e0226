// Tier and dataset bodies as flat forms: one labelled field per leaf ("budget.epsilon"), so a
// problem "budget.epsilon: must be ..." lands next to its field. Values keep their JSON type
// where the text parses as that type; otherwise the text is sent and the server explains.
import { field, fmt, h, record, select, table } from "./ui.js";

export function flatten(value, prefix = "", out = []) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) {
      flatten(inner, prefix ? `${prefix}.${key}` : key, out);
    }
  } else {
    out.push([prefix, value]);
  }
  return out;
}

export function unflatten(pairs) {
  const root = record(); // a column "__proto__" or "constructor" is a key
  for (const [path, value] of pairs) {
    const keys = path.split(".");
    let node = root;
    for (const key of keys.slice(0, -1)) node = node[key] ??= record();
    node[keys.at(-1)] = value;
  }
  return root;
}

const asNumber = (text) => (text.trim() !== "" && Number.isFinite(Number(text)) ? Number(text) : text);

function parse(text, original) {
  if (typeof original === "boolean") return text === "true";
  if (typeof original === "number") return asNumber(text);
  if (Array.isArray(original)) {
    if (!text.trim()) return [];
    const items = text.split(",").map((t) => t.trim());
    return original.length && original.every((x) => typeof x === "number")
      ? items.map(asNumber) : items;
  }
  if (original === null) return text.trim() === "" ? null : asNumber(text);
  return text;
}

export function policyForm(body) {
  const leaves = flatten(body).filter(([path]) => path !== "name");
  const form = h("form", { className: "card policy-form" });
  const inputs = leaves.map(([path, value]) => {
    const el = typeof value === "boolean"
      ? select(path, ["true", "false"], String(value))
      : h("input", { name: path, type: "text", value: Array.isArray(value) ? value.join(", ")
        : value ?? "", spellcheck: false });
    form.append(field(path, el, path));
    return [path, el, value];
  });
  const read = () => [["name", body.name],
    ...inputs.map(([path, el, original]) => [path, parse(el.value, original)])];
  return { form, read };
}

export function diffTable(a, b, labelA, labelB) {
  const left = new Map(a), right = new Map(b);
  const keys = [...new Set([...left.keys(), ...right.keys()])];
  const rows = keys.filter((k) => JSON.stringify(left.get(k)) !== JSON.stringify(right.get(k)))
    .map((k) => [k, fmt(left.get(k)), fmt(right.get(k))]);
  if (!rows.length) return h("p", { text: "No differences." });
  return table(["field", `version ${labelA}`, `version ${labelB}`], rows,
    `${rows.length} difference(s)`);
}
