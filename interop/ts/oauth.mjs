// Sign in with Coder through `serve --public-url`, end to end, with the official TypeScript
// SDK's OAuth client (`authProvider` on StreamableHTTPClientTransport, the SDK's `auth()`
// helpers). The user's browser is a redirect follower here: it goes from serve's /authorize to
// the simulated Coder's /oauth2/authorize (which consents at once as the signed-in user, see
// `sim --oauth-app-redirect`), back to serve's /callback, and on to this client's loopback
// redirect URI, where a listener takes the code, as a native MCP client's would.
//
// env: INTEROP_OAUTH_URL (serve's --public-url; /mcp under it), INTEROP_OAUTH_USER (the Coder
//      user the simulator signs in), INTEROP_CODER_URL + INTEROP_TOKEN (the simulated Coder and
//      its demo user's token), INTEROP_CODER_OAUTH_SECRET (serve's Coder OAuth2 app secret),
//      INTEROP_SIM_LOG (the simulator's stderr, which lists the Coder access tokens it issues),
//      INTEROP_OAUTH_SERVE_LOG (serve's stderr).
// Prints one summary line; exits non-zero on the first failed assertion.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { auth, exchangeAuthorization, refreshAuthorization, startAuthorization, UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { InvalidGrantError, InvalidTargetError } from "@modelcontextprotocol/sdk/server/auth/errors.js";
import { CallToolResultSchema } from "@modelcontextprotocol/sdk/types.js";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const PUBLIC = env("INTEROP_OAUTH_URL").replace(/\/$/, "");
const MCP_URL = `${PUBLIC}/mcp`;
const PRM_URL = `${PUBLIC}/.well-known/oauth-protected-resource/mcp`;
const AS_URL = `${PUBLIC}/.well-known/oauth-authorization-server`;
const USER = env("INTEROP_OAUTH_USER");
const CODER_URL = env("INTEROP_CODER_URL").replace(/\/$/, "");
const DEMO_TOKEN = env("INTEROP_TOKEN");
const CODER_APP_SECRET = env("INTEROP_CODER_OAUTH_SECRET");
const SIM_LOG = env("INTEROP_SIM_LOG");
const SERVE_LOG = env("INTEROP_OAUTH_SERVE_LOG");

// A Coder API key (what Coder's OAuth2 provider issues as access tokens): <10>-<22>.
const CODER_KEY = /(?<![A-Za-z0-9_-])[A-Za-z0-9]{10}-[A-Za-z0-9]{22}(?![A-Za-z0-9_-])/g;
// Coder's other OAuth2 secrets (app secrets, codes, refresh tokens): coder_<10>_<40>.
const CODER_SECRET = /coder_[A-Za-z0-9]{10}_[A-Za-z0-9]{40}/g;

const log = (...args) => console.error(...args);
const headersOf = (h) => new Headers(h ?? {});
const pathOf = (url) => new URL(url).pathname;

// ----- what the MCP client (the SDK) and the browser each saw --------------------------------

/** Every response the SDK received (status, headers, body), and its requests in order. */
const client = { wire: [], seen: [] };
/** The same for the browser (the redirect follower). */
const browser = { seen: [], cookies: new Map(), consents: 0 };

function recordBody(res, into) {
  if (!res.body) return res;
  const [mine, theirs] = res.body.tee();
  (async () => {
    const decoder = new TextDecoder();
    const reader = theirs.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        into.push(decoder.decode(value, { stream: true }));
      }
    } catch {
      // the stream was aborted (the transport closed): what arrived is kept
    }
  })();
  const copy = new Response(mine, { status: res.status, statusText: res.statusText, headers: res.headers });
  Object.defineProperty(copy, "url", { value: res.url });
  return copy;
}

function recordHead(res, into) {
  into.push(`${res.status}\n${[...res.headers].map(([k, v]) => `${k}: ${v}`).join("\n")}\n`);
}

/** The fetch the SDK uses, everywhere (transport, discovery, registration, tokens). */
async function clientFetch(url, init = {}) {
  const res = await fetch(url, init);
  const headers = headersOf(init.headers);
  client.wire.push({
    method: (init.method ?? "GET").toUpperCase(),
    path: pathOf(url),
    status: res.status,
    authorization: headers.get("authorization"),
    session: headers.get("mcp-session-id"),
    body: init.body === undefined ? undefined : String(init.body),
    wwwAuthenticate: res.headers.get("www-authenticate"),
    cacheControl: res.headers.get("cache-control"),
    contentType: res.headers.get("content-type"),
  });
  recordHead(res, client.seen);
  return recordBody(res, client.seen);
}

/** The requests since `mark`, but for the standalone GET stream, which the transport opens
 *  (and may reopen) on its own. */
const since = (mark) => client.wire.slice(mark).filter((w) => !(w.method === "GET" && w.path === "/mcp"));
/** The same as `METHOD /path status` lines. */
const wireSince = (mark) => since(mark).map((w) => `${w.method} ${w.path} ${w.status}`);

// ----- the client's loopback redirect URI and the browser ------------------------------------

const arrivals = [];
const listener = http.createServer((req, res) => {
  const url = new URL(req.url, "http://127.0.0.1");
  arrivals.push(Object.fromEntries(url.searchParams));
  res.writeHead(200, { "content-type": "text/plain" }).end("Done: you can close this window.\n");
});
await new Promise((resolve) => listener.listen(0, "127.0.0.1", resolve));
const REDIRECT_URI = `http://127.0.0.1:${listener.address().port}/oauth/callback`;

/** Follows redirects from `url` as a browser would, to the page that ends them: the hops, and
 *  what reached the client's redirect URI. */
async function browse(url) {
  const hops = [];
  const before = arrivals.length;
  for (let i = 0; i < 10; i++) {
    let res = await fetch(url, { redirect: "manual", headers: cookiesFor(url) });
    keepCookies(res, url);
    recordHead(res, browser.seen);
    const page = await res.text();
    browser.seen.push(page);
    if (res.status === 200 && String(url).startsWith(`${PUBLIC}/authorize`)) {
      // serve's consent page (the client and where the sign-in goes back to): the user
      // clicks "Continue to Coder", a form POST that carries the page's cookie.
      res = await consent(res, page, url);
    }
    const location = res.headers.get("location");
    hops.push({ url: String(url), status: res.status, location });
    if (res.status < 300 || res.status >= 400) {
      assert.equal(res.status, 200, `the browser stopped at ${url} with ${res.status}`);
      assert.equal(arrivals.length, before + 1, `the browser ended at ${url}, not at the client's redirect URI`);
      return { hops, query: arrivals.at(-1) };
    }
    assert.ok(location, `${res.status} without Location at ${url}`);
    url = new URL(location, url);
  }
  throw new Error(`more than 10 redirects from ${hops[0].url}`);
}

/** The browser's cookies for serve (all this session needs of a cookie jar). */
function cookiesFor(url) {
  if (!String(url).startsWith(PUBLIC) || browser.cookies.size === 0) return {};
  return { cookie: [...browser.cookies].map(([k, v]) => `${k}=${v}`).join("; ") };
}
function keepCookies(res, url) {
  if (!String(url).startsWith(PUBLIC)) return;
  for (const line of res.headers.getSetCookie()) {
    const [pair] = line.split(";");
    const at = pair.indexOf("=");
    browser.cookies.set(pair.slice(0, at), pair.slice(at + 1));
  }
}

/** The consent page, checked, and the user's "Continue to Coder". */
async function consent(res, page, url) {
  assert.equal(res.headers.get("x-frame-options"), "DENY", "the consent page cannot be framed");
  assert.match(res.headers.get("content-security-policy") ?? "", /frame-ancestors 'none'/);
  assert.ok(page.includes("interop-ts-oauth"), "the page names the client");
  assert.ok(page.includes(new URL(REDIRECT_URI).host), "the page says where the sign-in goes back to");
  const state = /name="state" value="([^"]+)"/.exec(page)?.[1];
  assert.ok(state, `a consent form at ${url}`);
  const answer = await fetch(`${PUBLIC}/authorize`, {
    method: "POST",
    redirect: "manual",
    headers: { "content-type": "application/x-www-form-urlencoded", ...cookiesFor(PUBLIC) },
    body: new URLSearchParams({ state, decision: "allow" }),
  });
  keepCookies(answer, PUBLIC);
  recordHead(answer, browser.seen);
  browser.seen.push(await answer.text());
  assert.equal(answer.status, 302, "the consent continues to Coder");
  browser.consents += 1;
  return answer;
}

// ----- the OAuthClientProvider ---------------------------------------------------------------

class Provider {
  constructor() {
    this.info = undefined;
    this.tok = undefined;
    this.verifier = undefined;
    this.discovery = undefined;
    this.sentState = undefined;
    this.signIns = [];
    this.invalidated = [];
  }
  get redirectUrl() {
    return REDIRECT_URI;
  }
  get clientMetadata() {
    // No token_endpoint_auth_method: RFC 7591's default, client_secret_basic, with a secret.
    return {
      client_name: "interop-ts-oauth",
      redirect_uris: [REDIRECT_URI],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
    };
  }
  state() {
    this.sentState = randomBytes(16).toString("hex");
    return this.sentState;
  }
  clientInformation() {
    return this.info;
  }
  saveClientInformation(info) {
    this.info = info;
  }
  tokens() {
    return this.tok;
  }
  saveTokens(tokens) {
    this.tok = tokens;
  }
  saveCodeVerifier(verifier) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }
  saveDiscoveryState(state) {
    this.discovery = state;
  }
  discoveryState() {
    return this.discovery;
  }
  invalidateCredentials(scope) {
    this.invalidated.push(scope);
    if (scope === "all" || scope === "client") this.info = undefined;
    if (scope === "all" || scope === "tokens") this.tok = undefined;
    if (scope === "all" || scope === "verifier") this.verifier = undefined;
    if (scope === "all" || scope === "discovery") this.discovery = undefined;
  }
  /** The user's browser signs in; the code is kept for finishAuth, as an app's callback would. */
  async redirectToAuthorization(authorizationUrl) {
    const { hops, query } = await browse(authorizationUrl);
    checkSignInHops(hops, query, this.sentState);
    this.signIns.push({ hops, query });
  }
  get code() {
    return this.signIns.at(-1).query.code;
  }
}

/** A successful sign-in: serve → Coder (as its own OAuth2 app, its own PKCE and state, resource =
 *  Coder) → serve's /callback → the client, with our code, the client's state and the issuer. */
function checkSignInHops(hops, query, state) {
  const summary = hops.map((h) => `${h.status} ${h.url.split("?")[0]}`);
  assert.equal(hops.length, 4, `sign-in hops: ${summary.join(" → ")}`);
  const [ours, coder, callback] = hops.map((h) => new URL(h.url));
  assert.equal(`${ours.origin}${ours.pathname}`, `${PUBLIC}/authorize`);
  assert.equal(`${coder.origin}${coder.pathname}`, `${CODER_URL}/oauth2/authorize`, "on to Coder's sign-in");
  const toCoder = Object.fromEntries(coder.searchParams);
  assert.equal(toCoder.response_type, "code");
  assert.equal(toCoder.redirect_uri, `${PUBLIC}/callback`);
  assert.equal(toCoder.code_challenge_method, "S256");
  assert.notEqual(toCoder.code_challenge, ours.searchParams.get("code_challenge"), "serve's own PKCE with Coder");
  assert.notEqual(toCoder.state, state, "serve's own state with Coder");
  assert.equal(toCoder.resource, CODER_URL, "the only audience Coder accepts");
  assert.equal(`${callback.origin}${callback.pathname}`, `${PUBLIC}/callback`);
  assert.ok(callback.searchParams.get("code"), "Coder's code to serve");
  assert.ok(hops[3].url.startsWith(REDIRECT_URI), `back to the client: ${hops[3].url}`);
  // RFC 6749 §4.1.2 and RFC 9207: the code, the client's state, the issuer.
  assert.match(query.code ?? "", /^\S{20,}$/, `the client's code: ${JSON.stringify(query)}`);
  assert.equal(query.state, state, "state comes back unchanged");
  assert.equal(query.iss, PUBLIC, "RFC 9207 iss");
  assert.equal(query.error, undefined);
}

/** An authorization request serve refuses: back to the client with the error (RFC 6749
 *  §4.1.2.1, with RFC 9207's iss), never to Coder. */
async function refusedAuthorization(url, error, what) {
  const { hops, query } = await browse(url);
  assert.equal(hops.length, 2, `${what}: ${hops.map((h) => h.url).join(" → ")}`);
  assert.ok(!hops.some((h) => h.url.startsWith(CODER_URL)), `${what}: went to Coder`);
  assert.equal(query.error, error, `${what}: ${JSON.stringify(query)}`);
  assert.ok(query.error_description, `${what}: error_description`);
  assert.equal(query.iss, PUBLIC, `${what}: iss`);
  assert.equal(query.code, undefined, `${what}: a code`);
  return query;
}

// ----- the metadata documents, field by field ------------------------------------------------

// RFC 9728 §2, and the names its registry holds.
const PRM_NAMES = new Set([
  "resource", "authorization_servers", "jwks_uri", "scopes_supported", "bearer_methods_supported",
  "resource_signing_alg_values_supported", "resource_name", "resource_documentation", "resource_policy_uri",
  "resource_tos_uri", "tls_client_certificate_bound_access_tokens", "authorization_details_types_supported",
  "dpop_signing_alg_values_supported", "dpop_bound_access_tokens_required", "signed_metadata",
]);
// RFC 8414 §2, RFC 9207 (iss), RFC 9126 (PAR), RFC 9449 (DPoP), and the client ID metadata
// document draft (MCP's CIMD).
const AS_NAMES = new Set([
  "issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "registration_endpoint", "scopes_supported",
  "response_types_supported", "response_modes_supported", "grant_types_supported",
  "token_endpoint_auth_methods_supported", "token_endpoint_auth_signing_alg_values_supported",
  "service_documentation", "ui_locales_supported", "op_policy_uri", "op_tos_uri", "revocation_endpoint",
  "revocation_endpoint_auth_methods_supported", "revocation_endpoint_auth_signing_alg_values_supported",
  "introspection_endpoint", "introspection_endpoint_auth_methods_supported",
  "introspection_endpoint_auth_signing_alg_values_supported", "code_challenge_methods_supported", "signed_metadata",
  "authorization_response_iss_parameter_supported", "pushed_authorization_request_endpoint",
  "require_pushed_authorization_requests", "dpop_signing_alg_values_supported",
  "client_id_metadata_document_supported",
]);
const AUTH_METHODS = new Set(["none", "client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt"]);

async function getJson(url) {
  const res = await clientFetch(url);
  assert.equal(res.status, 200, `GET ${url}`);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/, `${url}: content-type`);
  return res.json();
}

function endpoint(doc, field, path) {
  assert.equal(doc[field], `${PUBLIC}${path}`, field);
  const url = new URL(doc[field]);
  assert.equal(url.hash, "", `${field}: no fragment (RFC 8414 §2)`);
}

/** RFC 9728: the protected resource's metadata. Returns the number of fields checked. */
async function checkProtectedResource(prm) {
  for (const key of Object.keys(prm)) assert.ok(PRM_NAMES.has(key), `RFC 9728: unregistered field ${key}`);
  // §3.3: `resource` is identical to the resource the well-known URL was made from.
  assert.equal(prm.resource, MCP_URL, "resource");
  // §2: issuer identifiers of the authorization servers; here serve itself.
  assert.deepEqual(prm.authorization_servers, [PUBLIC], "authorization_servers");
  // §2: header, body or query; bearer tokens only in the Authorization header.
  assert.deepEqual(prm.bearer_methods_supported, ["header"], "bearer_methods_supported");
  assert.equal(typeof prm.resource_name, "string", "resource_name");
  assert.ok(prm.resource_name.length > 0, "resource_name");
  // No scopes (every token may use every tool): the client then sends no scope at all.
  assert.equal(prm.scopes_supported, undefined, "scopes_supported");
  return Object.keys(prm).length;
}

/** RFC 8414: the authorization server's metadata. Returns the number of fields checked. */
async function checkAuthorizationServer(as) {
  for (const key of Object.keys(as)) assert.ok(AS_NAMES.has(key), `RFC 8414: unregistered field ${key}`);
  // §3.3: `issuer` is identical to the issuer the well-known URL was made from.
  assert.equal(as.issuer, PUBLIC, "issuer");
  assert.equal(new URL(as.issuer).search + new URL(as.issuer).hash, "", "issuer: no query or fragment");
  endpoint(as, "authorization_endpoint", "/authorize");
  endpoint(as, "token_endpoint", "/token");
  endpoint(as, "registration_endpoint", "/register");
  endpoint(as, "revocation_endpoint", "/revoke");
  assert.deepEqual(as.response_types_supported, ["code"], "response_types_supported (REQUIRED)");
  assert.deepEqual(as.response_modes_supported, ["query"], "response_modes_supported");
  assert.deepEqual([...as.grant_types_supported].sort(), ["authorization_code", "refresh_token"], "grant_types_supported");
  for (const field of ["token_endpoint_auth_methods_supported", "revocation_endpoint_auth_methods_supported"]) {
    assert.ok(Array.isArray(as[field]) && as[field].length > 0, field);
    for (const m of as[field]) assert.ok(AUTH_METHODS.has(m), `${field}: ${m}`);
    for (const m of ["none", "client_secret_basic", "client_secret_post"]) assert.ok(as[field].includes(m), `${field}: ${m}`);
  }
  // OAuth 2.1 and MCP: PKCE, S256 only (never plain).
  assert.deepEqual(as.code_challenge_methods_supported, ["S256"], "code_challenge_methods_supported");
  // RFC 9207: every authorization response carries iss (checked on each one below).
  assert.equal(as.authorization_response_iss_parameter_supported, true, "authorization_response_iss_parameter_supported");
  // Nothing signed, nothing introspected, no OpenID Connect.
  for (const field of ["jwks_uri", "introspection_endpoint", "userinfo_endpoint"]) assert.equal(as[field], undefined, field);
  if ("scopes_supported" in as) assert.ok(Array.isArray(as.scopes_supported), "scopes_supported");
  if ("client_id_metadata_document_supported" in as) assert.equal(typeof as.client_id_metadata_document_supported, "boolean");
  return Object.keys(as).length;
}

// ----- helpers -------------------------------------------------------------------------------

function structured(result, what) {
  assert.equal(result.isError ?? false, false, `${what}: isError: ${JSON.stringify(result.content)}`);
  assert.ok(result.structuredContent, `${what}: no structuredContent`);
  return result.structuredContent;
}

/** The `WWW-Authenticate` parameters of a Bearer challenge. */
function challenge(value) {
  assert.match(value ?? "", /^Bearer /i, `a Bearer challenge: ${value}`);
  return Object.fromEntries([...value.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
}

function connectClient(provider, label) {
  const transport = new StreamableHTTPClientTransport(new URL(MCP_URL), { authProvider: provider, fetch: clientFetch });
  const mcp = new Client({ name: `interop-ts-oauth-${label}`, version: "1.0.0" });
  const errors = [];
  // typescript-sdk#2580: a progress notification that arrives with its result is reported here.
  mcp.onerror = (err) => {
    if (!/progress notification for an unknown token/.test(err?.message ?? "")) errors.push(err);
  };
  return { transport, mcp, errors, connect: () => mcp.connect(transport) };
}

/** The Coder access tokens the simulator has issued so far (it logs them at debug level). */
function coderTokens() {
  const text = readFileSync(SIM_LOG, "utf8");
  return [...text.matchAll(/OAuth2 access token issued.*?access_token=(\S+)/g)].map((m) => m[1]);
}

async function coderUser(token) {
  const res = await fetch(`${CODER_URL}/api/v2/users/me`, { headers: { "Coder-Session-Token": token } });
  return res.ok ? (await res.json()).username : res.status;
}

async function tokenRequest(params, info) {
  const res = await clientFetch(`${PUBLIC}/token`, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      authorization: `Basic ${btoa(`${info.client_id}:${info.client_secret}`)}`,
    },
    body: new URLSearchParams(params),
  });
  return { status: res.status, body: await res.json() };
}

// ----- the session ---------------------------------------------------------------------------

const facts = {};
const provider = new Provider();
const closers = [];
try {
  // 1. Discovery, registration, authorization via Coder: the SDK's own flow, from a 401.
  let mark = client.wire.length;
  const first = connectClient(provider, "first");
  await assert.rejects(first.connect(), UnauthorizedError, "connect without a token: the SDK starts a sign-in");
  assert.equal(provider.signIns.length, 1, "one sign-in");
  await first.transport.finishAuth(provider.code);
  assert.deepEqual(
    wireSince(mark),
    [
      "POST /mcp 401",
      "GET /.well-known/oauth-protected-resource/mcp 200",
      "GET /.well-known/oauth-authorization-server 200",
      "POST /register 201",
      "POST /token 200",
    ],
    "discovery, registration, token",
  );
  const [unauthorized, , , registration, exchange] = since(mark);
  const first401 = challenge(unauthorized.wwwAuthenticate);
  assert.equal(first401.resource_metadata, PRM_URL, "401: resource_metadata (RFC 9728 §5.1)");
  assert.equal(first401.error, undefined, "401 without a token: no error code (RFC 6750 §3.1)");
  // RFC 7591 §3.2.1: the registration, with the metadata as registered.
  const info = provider.info;
  assert.match(info.client_id, /\S{8,}/, "client_id");
  assert.ok(info.client_secret, "a confidential client gets a secret");
  assert.equal(info.client_secret_expires_at, 0, "client_secret_expires_at (REQUIRED with a secret; 0: never)");
  assert.equal(typeof info.client_id_issued_at, "number", "client_id_issued_at");
  assert.equal(info.token_endpoint_auth_method, "client_secret_basic", "RFC 7591 §2 default");
  assert.deepEqual(info.redirect_uris, [REDIRECT_URI]);
  assert.deepEqual(info.grant_types, ["authorization_code", "refresh_token"]);
  assert.deepEqual(info.response_types, ["code"]);
  assert.equal(info.client_name, "interop-ts-oauth");
  assert.match(registration.contentType ?? "", /^application\/json/);
  // The code exchange: client_secret_basic, PKCE verifier, resource = the MCP endpoint.
  const exchanged = new URLSearchParams(exchange.body);
  assert.equal(exchanged.get("grant_type"), "authorization_code");
  assert.ok(exchanged.get("code_verifier"), "code_verifier");
  assert.equal(exchanged.get("resource"), MCP_URL, "RFC 8707 resource");
  assert.match(exchange.authorization ?? "", /^Basic /, "client_secret_basic");
  assert.equal(exchange.cacheControl, "no-store", "token response: Cache-Control no-store (RFC 6749 §5.1)");
  // RFC 6749 §5.1: the token response.
  const signedIn = provider.tok;
  assert.match(signedIn.token_type, /^bearer$/i, "token_type");
  assert.ok(signedIn.access_token && signedIn.refresh_token, "access and refresh tokens");
  assert.ok(signedIn.expires_in > 0, "expires_in");

  // 2. The metadata documents the SDK used, field by field.
  const prm = await getJson(PRM_URL);
  const as = await getJson(AS_URL);
  facts.prmFields = await checkProtectedResource(prm);
  facts.asFields = await checkAuthorizationServer(as);
  assert.deepEqual(provider.discovery.resourceMetadata, prm, "the SDK read the same protected resource metadata");
  assert.deepEqual(provider.discovery.authorizationServerMetadata, as, "the SDK read the same authorization server metadata");
  assert.equal(provider.discovery.authorizationServerUrl, PUBLIC, "authorization server = authorization_servers[0]");

  // 3. Tool calls as the signed-in Coder user.
  const second = connectClient(provider, "main");
  closers.push(second);
  mark = client.wire.length;
  await second.connect();
  assert.equal(since(mark)[0].authorization, `Bearer ${signedIn.access_token}`, "initialize with our access token");
  const sessionId = second.transport.sessionId;
  assert.ok(sessionId, "a session");
  const list = structured(await second.mcp.callTool({ name: "list_templates", arguments: {} }), "list_templates");
  // kubernetes: no presets, so no prebuilt workspace is claimed from the pool the other
  // sessions' docker creates use; a full build, with progress.
  const kube = list.templates.find((t) => t.name === "kubernetes");
  assert.ok(kube, "kubernetes template listed");
  let progress = 0;
  const created = structured(
    await second.mcp.callTool({ name: "create_workspace", arguments: { template_id: kube.id } }, CallToolResultSchema, {
      onprogress: () => progress++,
      resetTimeoutOnProgress: true,
      timeout: 30000,
      maxTotalTimeout: 120000,
    }),
    "create_workspace",
  );
  assert.equal(created.owner, USER, `the workspace belongs to the signed-in Coder user: ${JSON.stringify(created)}`);
  assert.equal(created.workspace_status, "running");
  assert.equal(created.created, true);
  assert.ok(progress > 0, "progress notifications during the build");
  facts.workspace = created.workspace_name;
  // Coder agrees: not the demo user's (whose token the other clients use).
  const demoWorkspaces = await (await fetch(`${CODER_URL}/api/v2/workspaces`, { headers: { "Coder-Session-Token": DEMO_TOKEN } })).json();
  assert.ok(!demoWorkspaces.workspaces.some((w) => w.id === created.workspace_id), "not a workspace of the demo user");

  // 4. A token for another resource is refused (RFC 8707 invalid_target): at the token
  //    endpoint (Coder's URL, the one audience that would work at Coder) and at /authorize.
  const metadata = provider.discovery.authorizationServerMetadata;
  await assert.rejects(
    refreshAuthorization(PUBLIC, { metadata, clientInformation: info, refreshToken: provider.tok.refresh_token, resource: new URL(CODER_URL), fetchFn: clientFetch }),
    InvalidTargetError,
    "a refresh for Coder's URL",
  );
  assert.equal(client.wire.at(-1).status, 400, "invalid_target: 400");
  const elsewhere = await startAuthorization(PUBLIC, {
    metadata,
    clientInformation: info,
    redirectUrl: REDIRECT_URI,
    state: "elsewhere",
    resource: new URL(`${PUBLIC}/other`),
  });
  const refusedTarget = await refusedAuthorization(elsewhere.authorizationUrl, "invalid_target", "authorize for another resource");
  assert.equal(refusedTarget.state, "elsewhere");

  // 5. A client without PKCE is refused at /authorize: no code_challenge, or `plain`.
  const noPkce = new URL(metadata.authorization_endpoint);
  for (const [k, v] of Object.entries({ response_type: "code", client_id: info.client_id, redirect_uri: REDIRECT_URI, state: "nopkce", resource: MCP_URL })) {
    noPkce.searchParams.set(k, v);
  }
  await refusedAuthorization(noPkce, "invalid_request", "authorize without code_challenge");
  const plain = new URL(noPkce);
  plain.searchParams.set("code_challenge", "x".repeat(43));
  plain.searchParams.set("code_challenge_method", "plain");
  await refusedAuthorization(plain, "invalid_request", "authorize with code_challenge_method=plain");

  // 6. Refresh: explicitly (the SDK's auth() with a refresh token), then as the SDK does on a
  //    401 from an access token the server no longer takes; the session carries on.
  const beforeRefresh = provider.tok;
  assert.equal(await auth(provider, { serverUrl: new URL(MCP_URL), fetchFn: clientFetch }), "AUTHORIZED", "auth() refreshes");
  assert.notEqual(provider.tok.access_token, beforeRefresh.access_token, "a new access token");
  assert.notEqual(provider.tok.refresh_token, beforeRefresh.refresh_token, "a new refresh token (rotation)");
  assert.equal(new URLSearchParams(client.wire.at(-1).body).get("grant_type"), "refresh_token");
  await assert.rejects(
    refreshAuthorization(PUBLIC, { metadata, clientInformation: info, refreshToken: beforeRefresh.refresh_token, resource: new URL(MCP_URL), fetchFn: clientFetch }),
    InvalidGrantError,
    "a spent refresh token",
  );
  provider.tok = { ...provider.tok, access_token: `cwm_at_${randomBytes(32).toString("base64url")}` };
  mark = client.wire.length;
  structured(await second.mcp.callTool({ name: "list_templates", arguments: {} }), "list_templates after a 401");
  assert.deepEqual(wireSince(mark), ["POST /mcp 401", "POST /token 200", "POST /mcp 200"], "401 → refresh → retry");
  const [stale, refreshed, retried] = since(mark);
  const stale401 = challenge(stale.wwwAuthenticate);
  assert.equal(stale401.error, "invalid_token", "an unknown token: invalid_token");
  assert.equal(stale401.resource_metadata, PRM_URL);
  assert.equal(new URLSearchParams(refreshed.body).get("grant_type"), "refresh_token");
  assert.equal(retried.authorization, `Bearer ${provider.tok.access_token}`, "the retry carries the new token");
  assert.equal(retried.session, sessionId, "the same session after the refresh");
  assert.equal(second.transport.sessionId, sessionId);
  facts.refreshes = 2;

  // 7. Revoke (RFC 7009) the refresh token: the whole sign-in ends, here and at Coder.
  const revoked = provider.tok;
  const coderBefore = coderTokens();
  assert.equal(await coderUser(coderBefore.at(-1)), USER, "the sign-in's Coder token works at Coder");
  const revoke = await clientFetch(metadata.revocation_endpoint, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      authorization: `Basic ${btoa(`${info.client_id}:${info.client_secret}`)}`,
    },
    body: new URLSearchParams({ token: revoked.refresh_token, token_type_hint: "refresh_token" }),
  });
  assert.equal(revoke.status, 200, "revoke: 200");
  const unknown = await clientFetch(metadata.revocation_endpoint, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", authorization: `Basic ${btoa(`${info.client_id}:${info.client_secret}`)}` },
    body: new URLSearchParams({ token: "not-a-token" }),
  });
  assert.equal(unknown.status, 200, "revoking an unknown token: 200 (RFC 7009 §2.2)");
  assert.equal(await coderUser(coderBefore.at(-1)), 401, "Coder no longer takes the sign-in's Coder token");
  // The access token of that sign-in is refused with the challenge (RFC 6750 §3.1, RFC 9728 §5.1).
  const afterRevoke = await clientFetch(MCP_URL, {
    method: "POST",
    headers: {
      authorization: `Bearer ${revoked.access_token}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
    },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list", params: {} }),
  });
  assert.equal(afterRevoke.status, 401, "a revoked access token: 401");
  const revoked401 = challenge(afterRevoke.headers.get("www-authenticate"));
  assert.equal(revoked401.error, "invalid_token");
  assert.equal(revoked401.resource_metadata, PRM_URL);
  await afterRevoke.text();
  // The SDK on that 401: its refresh is refused (invalid_grant), it drops the tokens and starts a
  // new sign-in, which the user completes; a new session works as the same Coder user.
  mark = client.wire.length;
  await assert.rejects(second.mcp.callTool({ name: "list_templates", arguments: {} }), UnauthorizedError, "the call after revoke");
  assert.deepEqual(wireSince(mark), ["POST /mcp 401", "POST /token 400"], "401 → refresh refused → sign in again");
  assert.ok(provider.invalidated.includes("tokens"), `the SDK dropped the tokens: ${provider.invalidated}`);
  assert.equal(provider.signIns.length, 2, "a second sign-in");
  // The transport reports what it throws to onerror too.
  assert.deepEqual(second.errors.map((e) => e.constructor.name), ["UnauthorizedError"], "the transport's errors");
  second.errors.length = 0;
  await second.transport.finishAuth(provider.code);
  assert.notEqual(provider.tok.access_token, revoked.access_token);
  // The old session belonged to the revoked sign-in: the new one cannot take it over.
  mark = client.wire.length;
  await assert.rejects(second.mcp.callTool({ name: "list_templates", arguments: {} }), /403|another token/, "the old session with the new sign-in");
  assert.deepEqual(wireSince(mark), ["POST /mcp 403"], "the old session refuses the new sign-in");
  second.errors.length = 0;
  const third = connectClient(provider, "again");
  closers.push(third);
  await third.connect();
  const again = structured(await third.mcp.callTool({ name: "list_templates", arguments: {} }), "list_templates after signing in again");
  assert.ok(again.templates.length >= 2);
  assert.equal(await coderUser(coderTokens().at(-1)), USER, "the new sign-in's Coder token");

  // 8. PKCE at the token endpoint: a code without its verifier, or with a wrong one, gets no
  //    token; the wrong one spends the code (RFC 6749 §4.1.2: used once).
  const pkce = await startAuthorization(PUBLIC, { metadata, clientInformation: info, redirectUrl: REDIRECT_URI, state: "pkce", resource: new URL(MCP_URL) });
  const { query } = await browse(pkce.authorizationUrl);
  assert.equal(query.state, "pkce");
  const codeParams = { grant_type: "authorization_code", code: query.code, redirect_uri: REDIRECT_URI, resource: MCP_URL };
  const missing = await tokenRequest(codeParams, info);
  assert.equal(missing.status, 400, "no code_verifier");
  assert.equal(missing.body.error, "invalid_request", `no code_verifier: ${JSON.stringify(missing.body)}`);
  await assert.rejects(
    exchangeAuthorization(PUBLIC, { metadata, clientInformation: info, authorizationCode: query.code, codeVerifier: "w".repeat(43), redirectUri: REDIRECT_URI, resource: new URL(MCP_URL), fetchFn: clientFetch }),
    InvalidGrantError,
    "a wrong code_verifier",
  );
  const spent = await tokenRequest({ ...codeParams, code_verifier: pkce.codeVerifier }, info);
  assert.equal(spent.body.error, "invalid_grant", "the code was spent by the wrong verifier");

  // 9. No Coder credential reached the client or serve's log: not the Coder tokens the
  //    simulator issued, nothing shaped like a Coder API key, not Coder's codes, refresh tokens
  //    or serve's app secret. The browser carries Coder's code (from Coder to serve's /callback,
  //    bound to serve's PKCE verifier) and nothing else of Coder's.
  const issued = coderTokens();
  assert.ok(issued.length >= 3, `the simulator logged the Coder tokens it issued: ${issued.length}`);
  const clientText = client.seen.join("");
  const browserText = browser.seen.join("");
  const serveLog = readFileSync(SERVE_LOG, "utf8");
  for (const [name, text] of [["the client's responses", clientText], ["the browser's pages", browserText], ["serve's log", serveLog]]) {
    for (const token of issued) assert.ok(!text.includes(token), `a Coder access token in ${name}`);
    assert.deepEqual(text.match(CODER_KEY) ?? [], [], `something shaped like a Coder API key in ${name}`);
    assert.ok(!text.includes(CODER_APP_SECRET), `serve's Coder app secret in ${name}`);
  }
  for (const [name, text] of [["the client's responses", clientText], ["serve's log", serveLog]]) {
    assert.deepEqual(text.match(CODER_SECRET) ?? [], [], `a Coder code, refresh token or secret in ${name}`);
  }
  // Nor our own secrets in serve's log.
  for (const secret of [info.client_secret, signedIn.access_token, signedIn.refresh_token, revoked.access_token, provider.tok.access_token]) {
    assert.ok(!serveLog.includes(secret), "one of serve's own tokens in its log");
  }
  facts.responses = client.wire.length;
  facts.pages = browser.seen.length / 2;
  facts.coderTokens = issued.length;
  for (const c of closers) assert.deepEqual(c.errors, [], "client errors");
  facts.progress = progress;
} catch (err) {
  console.log(`typescript-sdk-oauth: FAILED: ${err?.stack ?? err}`);
  log("--- the client's requests:");
  for (const w of client.wire) log(`${w.method} ${w.path} ${w.status}${w.wwwAuthenticate ? ` [${w.wwwAuthenticate}]` : ""}`);
  process.exitCode = 1;
} finally {
  for (const c of closers) await c.mcp.close().catch(() => {});
  listener.close();
}

if (!process.exitCode) {
  log(`client requests: ${facts.responses}; browser pages: ${facts.pages}; Coder tokens issued: ${facts.coderTokens}`);
  console.log(
    `typescript-sdk-oauth: ok (401 → RFC 9728 + RFC 8414 discovery → registration → consent at serve (asked ${browser.consents}×, then remembered) → sign-in at Coder as ${USER} → token; ` +
      `list_templates + create_workspace owned by ${USER} (${facts.progress} progress notifications); refresh: auth() and on a 401, same session; ` +
      `revoke → 401 invalid_token, the SDK signs in again; refused: another resource, no PKCE, plain, wrong verifier; ` +
      `metadata ${facts.prmFields} + ${facts.asFields} fields; no Coder token in ${facts.responses} responses, ${facts.pages} pages or serve's log)`,
  );
}
process.exit(process.exitCode ?? 0);
