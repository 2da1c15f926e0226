// Entry point: sign-in (token or OpenID Connect), then the views of the token's roles.
import {
  claims, finishSignIn, roles, session, setToken, signOut, startSignIn, takeTokenFromFragment, token,
} from "./auth.js";
import * as auditor from "./auditor.js";
import * as researcher from "./researcher.js";
import * as steward from "./steward.js";
import { errorBox, field, h } from "./ui.js";

const VIEWS = [
  ["researcher", "Researcher", researcher.render],
  ["admin", "Steward", steward.render],
  ["auditor", "Auditor", auditor.render],
];
const main = document.getElementById("main");
let settings;

async function boot() {
  takeTokenFromFragment();
  settings = await (await fetch("/console/config.json")).json();
  let message = "";
  try {
    await finishSignIn(settings);
  } catch (err) {
    message = err.message;
  }
  window.addEventListener("enclave:signed-out", (ev) =>
    showSignIn(`Signed out: the gateway refused the token (${ev.detail}).`));
  if (token()) showConsole();
  else showSignIn(message);
}

function showSignIn(message = "") {
  document.getElementById("nav").replaceChildren();
  document.getElementById("who").replaceChildren();
  const pasted = h("textarea", { name: "token", rows: 4, required: true, spellcheck: false,
    autocomplete: "off" });
  const form = h("form", { className: "card signin", onsubmit: (ev) => {
    ev.preventDefault();
    setToken(pasted.value);
    showConsole();
  } },
  h("h1", { text: "Sign in" }),
  message ? h("p", { className: "error", role: "alert", text: message }) : null,
  settings.oidc_client_id ? h("p", {}, h("button", { type: "button", id: "oidc-signin",
    text: "Sign in with your organisation", onclick: () =>
      startSignIn(settings).catch((err) => showSignIn(err.message)) })) : null,
  h("p", { text: "Or paste a bearer token (kept in this tab only, gone when it closes):" }),
  field("Bearer token", pasted),
  h("button", { type: "submit", text: "Sign in with token" }));
  main.replaceChildren(form);
  pasted.focus();
}

function showConsole() {
  const mine = roles(token(), settings.roles_claim);
  session.roles = mine;
  const sub = String(claims(token()).sub || "unknown");
  const views = VIEWS.filter(([role]) => mine.includes(role));
  document.getElementById("who").replaceChildren(
    h("span", { text: `${sub} · ${mine.join(", ") || "no role"}` }),
    h("button", { type: "button", id: "signout", text: "Sign out", onclick: () => {
      signOut();
      showSignIn("Signed out.");
    } }));
  const nav = document.getElementById("nav");
  const buttons = views.map(([role, label, render]) => h("button", {
    type: "button", text: label, "data-role": role, onclick: () => open(role, label, render),
  }));
  nav.replaceChildren(...buttons);
  function open(role, label, render) {
    buttons.forEach((b) => b.setAttribute("aria-current", String(b.dataset.role === role)));
    document.title = `${label} · Enclave console`;
    const root = h("div", { className: "view", "data-view": role });
    main.replaceChildren(h("h1", { text: label }), root);
    Promise.resolve(render(root)).catch((err) => root.append(errorBox(err)));
  }
  if (!views.length) {
    main.replaceChildren(h("p", { className: "error", text:
      "This token carries none of the roles researcher, admin or auditor." }));
    return;
  }
  open(...views[0]);
}

boot().catch((err) => main.replaceChildren(errorBox(err)));
