// Console sign-in through the Cognito hosted UI: authorization code with PKCE (RFC 7636, S256).
// Only in the cloud, where the deployment writes /static/console-config.json (no inline script:
// the page's CSP stays strict); on one machine that file is absent and officers paste a token.
// The verifier and state live in sessionStorage only across the redirect and are removed on
// return; the ID token is handed to the console, which keeps it in memory (never localStorage).
"use strict";

const FaceDedupSignIn = (() => {
  const PENDING = "face-dedup-pkce"; // sessionStorage key: {verifier, state} during the redirect

  function base64url(bytes) {
    let text = "";
    for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function randomString(byteCount) {
    return base64url(crypto.getRandomValues(new Uint8Array(byteCount)));
  }

  async function challengeFor(verifier) {
    return base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  }

  // The hosted-UI settings, or null where the console signs in with a pasted token.
  async function config() {
    let response;
    try {
      response = await fetch(new URL("static/console-config.json", new URL(".", location.href)).href, { cache: "no-store" });
    } catch (error) { return null; }
    if (!response.ok) return null;
    const found = await response.json();
    const fields = ["authorize_url", "token_url", "client_id", "redirect_uri"];
    if (found.auth !== "cognito" || !fields.every((f) => typeof found[f] === "string" && found[f])) return null;
    return found;
  }

  // Leave for the hosted UI with a fresh verifier (43 characters from 32 random bytes) and state.
  async function begin(settings) {
    const verifier = randomString(32);
    const state = randomString(16);
    sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state }));
    const query = new URLSearchParams({
      response_type: "code",
      client_id: settings.client_id,
      redirect_uri: settings.redirect_uri,
      scope: settings.scope || "openid email",
      state,
      code_challenge: await challengeFor(verifier),
      code_challenge_method: "S256",
    });
    location.assign(settings.authorize_url + "?" + query.toString());
  }

  // Back from the hosted UI: trade the code for tokens. Returns the ID token (its claims carry
  // the officer's groups and tenant, which the API's Cognito authorizer reads), or null when
  // this page load is not a return from sign-in. A state that does not match is refused.
  async function finish(settings) {
    const params = new URLSearchParams(location.search);
    const code = params.get("code");
    const error = params.get("error");
    if (!code && !error) return null;
    const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
    sessionStorage.removeItem(PENDING);
    history.replaceState(null, "", location.pathname); // the code is single-use: out of the URL
    if (error) throw new Error("sign-in failed: " + error);
    if (!pending || params.get("state") !== pending.state) throw new Error("sign-in refused: unexpected state");
    const response = await fetch(settings.token_url, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code",
        client_id: settings.client_id,
        code,
        redirect_uri: settings.redirect_uri,
        code_verifier: pending.verifier,
      }).toString(),
    });
    if (!response.ok) throw new Error("sign-in failed: the token endpoint answered " + response.status);
    const tokens = await response.json();
    if (typeof tokens.id_token !== "string") throw new Error("sign-in failed: no ID token");
    return tokens.id_token;
  }

  return { base64url, challengeFor, config, begin, finish };
})();
