"""The console's hosted-UI sign-in (static/signin.js: authorization code + PKCE), run by Node in
a bare VM context with only what a browser gives it (Node's WebCrypto, TextEncoder, btoa,
URLSearchParams) plus a recording location, history, sessionStorage and fetch standing in for
the page and for Cognito's token endpoint. Checks RFC 7636's own test vector, the authorize
redirect, that a foreign `state` is refused, and the code exchange."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

SIGNIN = Path(__file__).resolve().parents[2] / "src" / "face_dedup_api" / "static" / "signin.js"
SETTINGS = {
    "auth": "cognito",
    "authorize_url": "https://face-dedup-1.auth.eu-west-1.amazoncognito.com/oauth2/authorize",
    "token_url": "https://face-dedup-1.auth.eu-west-1.amazoncognito.com/oauth2/token",
    "client_id": "client123",
    "redirect_uri": "https://console.example/v1/",
}

HARNESS = r"""
const vm = require("node:vm");
const fs = require("node:fs");
const [file, settingsJson] = process.argv.slice(-2);
const source = fs.readFileSync(file, "utf8");
const settings = JSON.parse(settingsJson);
function page(search, stored) {
  const storage = new Map(Object.entries(stored || {}));
  const record = { assigned: null, replaced: null, fetched: [] };
  const context = {
    crypto: globalThis.crypto, TextEncoder, btoa, URLSearchParams, URL, JSON, Uint8Array, String, Error,
    location: {
      search, pathname: "/v1/", href: "https://console.registry.example/v1/" + search,
      assign: (url) => { record.assigned = url; },
    },
    history: { replaceState: (a, b, url) => { record.replaced = url; } },
    sessionStorage: {
      getItem: (k) => (storage.has(k) ? storage.get(k) : null),
      setItem: (k, v) => storage.set(k, String(v)),
      removeItem: (k) => storage.delete(k),
    },
    fetch: async (url, options) => {
      record.fetched.push({ url, options });
      // under the API stage's path, where the cloud serves the page (not the host's root)
      if (url === "https://console.registry.example/v1/static/console-config.json") {
        return { ok: true, json: async () => settings };
      }
      return { ok: true, json: async () => ({ id_token: "id.token.jwt", access_token: "a" }) };
    },
  };
  vm.createContext(context);
  vm.runInContext(source + "\nthis.S = FaceDedupSignIn;", context);
  return { S: context.S, storage, record };
}
(async () => {
  const out = {};
  const first = page("");
  out.vector = await first.S.challengeFor("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
  out.config = await first.S.config();
  await first.S.begin(settings);
  out.assigned = first.record.assigned;
  out.pending = JSON.parse(first.storage.get("face-dedup-pkce"));
  out.notReturning = await first.S.finish(settings);
  const foreign = page("?code=abc&state=not-ours", { "face-dedup-pkce": JSON.stringify(out.pending) });
  try { await foreign.S.finish(settings); out.foreign = "accepted"; } catch (e) { out.foreign = e.message; }
  out.foreignFetched = foreign.record.fetched.length;
  const stored = { "face-dedup-pkce": JSON.stringify(out.pending) };
  const back = page("?code=abc&state=" + out.pending.state, stored);
  out.token = await back.S.finish(settings);
  out.exchange = back.record.fetched[0];
  out.replaced = back.record.replaced;
  out.leftPending = back.storage.has("face-dedup-pkce");
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def run() -> dict[str, object]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    done = subprocess.run(
        [node, "-e", HARNESS, "--", str(SIGNIN), json.dumps(SETTINGS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_challenge_is_rfc_7636_s256(run: dict[str, object]) -> None:
    verifier = b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636, appendix B
    assert (
        run["vector"]
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        == b64url(hashlib.sha256(verifier).digest())
    )


def test_begin_redirects_to_the_hosted_ui_with_a_challenge_of_its_verifier(run: dict[str, object]) -> None:
    assert run["config"] == SETTINGS
    url = urlsplit(str(run["assigned"]))
    assert f"{url.scheme}://{url.netloc}{url.path}" == SETTINGS["authorize_url"]
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    pending = run["pending"]
    assert isinstance(pending, dict)
    verifier = pending["verifier"]
    assert 43 <= len(verifier) <= 128 and set(verifier) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    )
    assert query == {
        "response_type": "code",
        "client_id": "client123",
        "redirect_uri": SETTINGS["redirect_uri"],
        "scope": "openid email",
        "state": pending["state"],
        "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest()),
        "code_challenge_method": "S256",
    }
    assert run["notReturning"] is None  # a plain page load is no return from sign-in


def test_a_foreign_state_is_refused_before_any_exchange(run: dict[str, object]) -> None:
    assert "unexpected state" in str(run["foreign"]) and run["foreignFetched"] == 0


def test_the_code_is_exchanged_with_the_verifier_and_leaves_the_url(run: dict[str, object]) -> None:
    assert run["token"] == "id.token.jwt"
    exchange = run["exchange"]
    assert isinstance(exchange, dict) and exchange["url"] == SETTINGS["token_url"]
    form = {k: v[0] for k, v in parse_qs(exchange["options"]["body"]).items()}
    pending = run["pending"]
    assert isinstance(pending, dict)
    assert form == {
        "grant_type": "authorization_code",
        "client_id": "client123",
        "code": "abc",
        "redirect_uri": SETTINGS["redirect_uri"],
        "code_verifier": pending["verifier"],
    }
    assert run["replaced"] == "/v1/" and run["leftPending"] is False
