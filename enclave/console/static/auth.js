// The bearer token (sessionStorage only, never a cookie) and OpenID Connect sign-in:
// authorization code flow with PKCE (S256); state and nonce checked on return.

const TOKEN = "enclave.token";
const PENDING = "enclave.oidc";

export const session = { roles: [] }; // the signed-in token's roles, for display choices only
export const token = () => sessionStorage.getItem(TOKEN);
export const setToken = (value) => sessionStorage.setItem(TOKEN, value.trim());
export const signOut = () => sessionStorage.removeItem(TOKEN);

// Claims are read for display only: the server checks the signature and decides.
export function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replaceAll("-", "+").replaceAll("_", "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

export function roles(jwt, claimName) {
  const value = claims(jwt)[claimName];
  return Array.isArray(value) ? value.filter((r) => typeof r === "string") : [];
}

// `/console#token=…` (the demo's links): take the token once, then drop it from the URL and
// from history so it is not left in the address bar, bookmarks or the back button.
// A `#token=` fragment that is not a well-formed token is dropped all the same.
export function takeTokenFromFragment() {
  if (!location.hash.startsWith("#token=")) return;
  const match = /^#token=([A-Za-z0-9._~-]+)$/.exec(location.hash);
  if (match) setToken(match[1]);
  history.replaceState(null, "", location.pathname + location.search);
}

const b64url = (bytes) =>
  btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");
const random = (n = 32) => b64url(crypto.getRandomValues(new Uint8Array(n)));

async function discover(issuer) {
  const url = issuer.replace(/\/$/, "") + "/.well-known/openid-configuration";
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  if (!resp.ok) throw new Error(`the identity provider's discovery document failed (${resp.status})`);
  const doc = await resp.json();
  if (doc.issuer !== issuer) throw new Error("the discovery document names another issuer");
  return doc;
}

const redirectUri = () => `${location.origin}/console`;

export async function startSignIn(settings) {
  const doc = await discover(settings.issuer);
  const verifier = random(48);
  const challenge = b64url(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const pending = { verifier, state: random(), nonce: random(), tokenEndpoint: doc.token_endpoint };
  sessionStorage.setItem(PENDING, JSON.stringify(pending));
  const params = new URLSearchParams({
    response_type: "code",
    client_id: settings.oidc_client_id,
    redirect_uri: redirectUri(),
    scope: settings.oidc_scopes.join(" "),
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: challenge,
    code_challenge_method: "S256",
  });
  location.assign(`${doc.authorization_endpoint}?${params}`);
}

// Back from the identity provider with ?code=…&state=…: exchange the code (with the PKCE
// verifier) for tokens. Returns true when a sign-in was completed here.
export async function finishSignIn(settings) {
  const query = new URLSearchParams(location.search);
  if (!query.has("code") && !query.has("error")) return false;
  history.replaceState(null, "", location.pathname);
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  // the state first: anyone can link to /console?error=<any text>, so nothing from the query
  // is shown unless it answers this tab's own request, and then only an RFC 6749 error code
  if (!pending || query.get("state") !== pending.state) {
    throw new Error("sign-in failed: the state does not match the request");
  }
  if (query.has("error")) {
    const code = query.get("error");
    throw new Error(`sign-in refused by the identity provider${
      /^[a-z_]{1,64}$/.test(code) ? ` (${code})` : ""}`);
  }
  const resp = await fetch(pending.tokenEndpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: query.get("code"),
      redirect_uri: redirectUri(),
      client_id: settings.oidc_client_id,
      code_verifier: pending.verifier,
    }),
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(`the code exchange was refused (${body.error || resp.status})`);
  const id = claims(body.id_token || "");
  const audiences = [].concat(id.aud || []);
  if (id.nonce !== pending.nonce) throw new Error("sign-in failed: the nonce does not match");
  if (id.iss !== settings.issuer || !audiences.includes(settings.oidc_client_id)) {
    throw new Error("sign-in failed: the ID token is not for this console");
  }
  setToken(body.access_token);
  return true;
}
