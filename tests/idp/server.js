#!/usr/bin/env node
// A real OpenID provider (the `oidc-provider` package) for the test suite, on loopback only.
//
//   node server.js [--port N] [--host 127.0.0.1] [--issuer URL] [--keys-dir DIR] [--exit-on-stdin-close]
//
// Prints exactly one line on stdout, `READY <issuer>`, once it listens; logs go to stderr.
// `--port 0` (the default) picks a free port; the default issuer is then http://127.0.0.1:<that port>.
// An issuer with a path (http://127.0.0.1:9000/realms/test) mounts the provider under that path.
//
// Configuration (environment; the CLI flags above win over IDP_PORT / IDP_HOST / IDP_ISSUER / IDP_KEYS_DIR):
//   IDP_RESOURCE            default resource indicator = `aud` of the JWT access tokens (https://api.example.test)
//   IDP_RESOURCE_SCOPE      scopes that resource accepts ('openid profile email servicex reports:read reports:write')
//   IDP_ACCESS_TOKEN_ALG    JWS alg of access tokens: RS256 (default) or ES256
//   IDP_ACCESS_TOKEN_TTL    access token lifetime in seconds (600)
//   IDP_REDIRECT_URIS       comma-separated redirect URIs of `web-client` (http://127.0.0.1:8000/oidc/callback/)
//   IDP_WEB_APPLICATION_TYPE  `web` (default) or `native`: native allows any port on loopback redirect URIs
//   IDP_CLIENT_SECRET / IDP_WEB_CLIENT_SECRET   secrets of test-client / web-client (test-secret / web-secret)
//   IDP_USER_GROUPS         JSON list of group paths in user access tokens (["/atlas", "/atlas/users"]);
//                           `groups` carries them as given, `wlcg.groups` too (WLCG paths start with "/")
//   IDP_ROTATE_REFRESH_TOKENS  "1": every refresh of any client rotates its refresh token
//   IDP_METADATA            `openid` (default): OpenID discovery at <issuer>/.well-known/openid-configuration;
//                           `oauth`: RFC 8414 metadata only, at /.well-known/oauth-authorization-server<issuer
//                           path> (section 3.1 path insertion), 404 for OpenID discovery; `none`: 404 for both
//   IDP_BACKCHANNEL_LOGOUT_URI  unset (default): no back-channel logout. Set: features.backchannelLogout
//                           is on and `web-client` registers this backchannel_logout_uri with
//                           backchannel_logout_session_required, so its ID tokens carry `sid` and a
//                           confirmed logout at the end_session_endpoint POSTs a logout token there
//   IDP_TOKEN_EXCHANGE      `rfc` (default): `web-client` may exchange a user's access token of this provider
//                           (RFC 8693) for a refresh token of its own: requested_token_type refresh_token and
//                           offline_access in `scope`; the answer carries it as RFC 8693 section 2.2.1 says,
//                           in `access_token` with issued_token_type refresh_token and token_type N_A.
//                           `iam`: like INDIGO IAM or Keycloak, requested_token_type is not needed and the
//                           answer is an access token with the refresh token beside it. `off`: no such grant
//   IDP_DPOP                `on` (default, oidc-provider's own): a token request with a DPoP proof (RFC 9449) gets
//                           a token bound to its key (token_type DPoP, cnf.jkt in JWT access tokens), which
//                           userinfo then takes only with a proof; no nonces. `nonce`: the same, and every
//                           proof must carry a server nonce (use_dpop_nonce + DPoP-Nonce first). `off`: no DPoP
//
// Clients (static):
//   test-client / test-secret  client_credentials + device_code (+ refresh_token), client_secret_basic
//   web-client  / web-secret   authorization_code (+ PKCE, optional) + refresh_token, client_secret_basic
// Users: devInteractions is on, so its login page accepts any login/password and the login becomes `sub`.
// Access tokens of users also carry `preferred_username` (= the login), `groups` and `wlcg.groups`.
// ID tokens of the code flow carry `sub` only (conformIdTokenClaims): profile, email and the `groups`
// scope's claims are at userinfo, with the access token of a sign-in that asked for OpenID scopes only
// (openid offline_access profile email groups); asking for any other scope gets a token for the resource.
// For client_credentials tokens oidc-provider sets `sub` = the client id (and `client_id` too).
//
// Test-only admin routes (not part of OIDC; loopback tests only):
//   POST /__test__/rotate[?drop_old=1][&alg=RS256|ES256]  new key(s) with new kid(s) become the signing keys
//   GET  /__test__/stats          {"requests": {path: count}, "discovery": n, "jwks": n, "total": n, ...}
//   POST /__test__/reset-stats
//   POST /__test__/down[?seconds=N][&targets=discovery,jwks]  those endpoints answer 503 (N seconds or until /up);
//                                 targets also: token, revocation
//   POST /__test__/up
//   POST /__test__/delay?ms=N[&targets=revocation]  those endpoints (default: all four above) answer after
//                                 N ms (0 = no delay)
//   GET  /__test__/keys           current public JWKS and the signing kid per alg
//   GET  /__test__/metadata       the discovery document, whatever IDP_METADATA publishes
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const log = (...parts) => process.stderr.write(`[idp] ${parts.join(' ')}\n`);

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    host: { type: 'string' },
    issuer: { type: 'string' },
    'keys-dir': { type: 'string' },
    'exit-on-stdin-close': { type: 'boolean', default: false },
  },
});

const env = process.env;
const HOST = args.host || env.IDP_HOST || '127.0.0.1';
const PORT = Number(args.port ?? env.IDP_PORT ?? 0);
const KEYS_DIR = args['keys-dir'] || env.IDP_KEYS_DIR || '';
const RESOURCE = env.IDP_RESOURCE || 'https://api.example.test';
const RESOURCE_SCOPE = env.IDP_RESOURCE_SCOPE || 'openid profile email servicex reports:read reports:write';
const ACCESS_TOKEN_ALG = env.IDP_ACCESS_TOKEN_ALG || 'RS256';
const ACCESS_TOKEN_TTL = Number(env.IDP_ACCESS_TOKEN_TTL || 600);
const REDIRECT_URIS = (env.IDP_REDIRECT_URIS || 'http://127.0.0.1:8000/oidc/callback/')
  .split(',').map((s) => s.trim()).filter(Boolean);
const WEB_APPLICATION_TYPE = env.IDP_WEB_APPLICATION_TYPE || 'web';
const USER_GROUPS = JSON.parse(env.IDP_USER_GROUPS || '["/atlas", "/atlas/users"]');
const BACKCHANNEL_LOGOUT_URI = env.IDP_BACKCHANNEL_LOGOUT_URI || '';
const ROTATE_REFRESH_TOKENS = env.IDP_ROTATE_REFRESH_TOKENS === '1';
const METADATA = env.IDP_METADATA || 'openid';
const TOKEN_EXCHANGE_MODE = env.IDP_TOKEN_EXCHANGE || 'rfc';
const DPOP_MODE = env.IDP_DPOP || 'on';
const ALGS = ['RS256', 'ES256'];
const OPENID_SCOPES = new Set(['openid', 'offline_access', 'profile', 'email', 'groups']);
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const REFRESH_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:refresh_token';

if (!Array.isArray(USER_GROUPS) || !USER_GROUPS.every((g) => typeof g === 'string')) {
  log('IDP_USER_GROUPS must be a JSON list of strings');
  process.exit(2);
}
if (!['openid', 'oauth', 'none'].includes(METADATA)) {
  log(`IDP_METADATA must be openid, oauth or none, got ${METADATA}`);
  process.exit(2);
}
if (!['rfc', 'iam', 'off'].includes(TOKEN_EXCHANGE_MODE)) {
  log(`IDP_TOKEN_EXCHANGE must be rfc, iam or off, got ${TOKEN_EXCHANGE_MODE}`);
  process.exit(2);
}
if (!ALGS.includes(ACCESS_TOKEN_ALG)) {
  log(`IDP_ACCESS_TOKEN_ALG must be one of ${ALGS.join(', ')}, got ${ACCESS_TOKEN_ALG}`);
  process.exit(2);
}

// ---------------------------------------------------------------- signing keys

let keyCounter = 0;

function generateKey(alg) {
  keyCounter += 1;
  const { privateKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = `${alg.toLowerCase()}-${keyCounter}-${crypto.randomBytes(4).toString('hex')}`;
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

// Newest first: oidc-provider signs ID tokens with the first matching key, and access tokens with
// the kid we pass explicitly (the newest key of IDP_ACCESS_TOKEN_ALG).
let keys;
const keysFile = KEYS_DIR ? path.join(KEYS_DIR, 'jwks.json') : '';

function saveKeys() {
  if (!keysFile) return;
  fs.mkdirSync(KEYS_DIR, { recursive: true });
  fs.writeFileSync(keysFile, `${JSON.stringify({ keys }, null, 2)}\n`, { mode: 0o600 });
}

if (keysFile && fs.existsSync(keysFile)) {
  ({ keys } = JSON.parse(fs.readFileSync(keysFile, 'utf8')));
  keyCounter = keys.length;
  for (const alg of ALGS) {
    if (!keys.some((k) => k.alg === alg)) keys.push(generateKey(alg));
  }
  log(`loaded ${keys.length} keys from ${keysFile}`);
} else {
  keys = ALGS.map(generateKey);
  saveKeys();
}

const signingKid = (alg) => keys.find((k) => k.alg === alg).kid;
const publicJwk = ({ d, p, q, dp, dq, qi, ...pub }) => pub; // eslint-disable-line no-unused-vars

// ---------------------------------------------------------------- provider

const COOKIE_KEYS = [crypto.randomBytes(32).toString('hex')]; // shared by every Provider instance

function clients() {
  return [
    {
      client_id: 'test-client',
      client_secret: env.IDP_CLIENT_SECRET || 'test-secret',
      client_name: 'Test client (client_credentials, device flow)',
      grant_types: ['client_credentials', 'urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'web-client',
      client_secret: env.IDP_WEB_CLIENT_SECRET || 'web-secret',
      client_name: 'Web client (authorization code)',
      application_type: WEB_APPLICATION_TYPE,
      grant_types: ['authorization_code', 'refresh_token', ...(TOKEN_EXCHANGE_MODE === 'off' ? [] : [TOKEN_EXCHANGE])],
      response_types: ['code'],
      redirect_uris: REDIRECT_URIS,
      post_logout_redirect_uris: REDIRECT_URIS,
      token_endpoint_auth_method: 'client_secret_basic',
      ...(BACKCHANNEL_LOGOUT_URI && {
        backchannel_logout_uri: BACKCHANNEL_LOGOUT_URI,
        backchannel_logout_session_required: true,
      }),
    },
  ];
}

function resourceServerInfo(resource) {
  return {
    audience: resource,
    scope: RESOURCE_SCOPE,
    accessTokenTTL: ACCESS_TOKEN_TTL,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: ACCESS_TOKEN_ALG, kid: signingKid(ACCESS_TOKEN_ALG) } },
  };
}

function buildProvider(issuer) {
  const configuration = {
    clients: clients(),
    jwks: { keys },
    cookies: { keys: COOKIE_KEYS },
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    async findAccount(_ctx, id) {
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            name: id,
            preferred_username: id,
            email: `${id}@example.test`,
            email_verified: true,
            groups: USER_GROUPS,
          };
        },
      };
    },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      deviceFlow: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      dPoP: {
        enabled: DPOP_MODE !== 'off',
        ...(DPOP_MODE === 'nonce' ? { nonceSecret: crypto.randomBytes(32), requireNonce: () => true } : {}),
      },
      backchannelLogout: { enabled: Boolean(BACKCHANNEL_LOGOUT_URI) },
      resourceIndicators: {
        enabled: true,
        async defaultResource(ctx, _client, oneOf) {
          if (oneOf) return Array.isArray(oneOf) ? oneOf[0] : oneOf;
          // A sign-in asking for OpenID scopes only gets an access token for userinfo, as most providers give.
          const scope = ctx.oidc.params?.scope ?? ctx.oidc.entities?.AuthorizationCode?.scope ?? '';
          const requested = String(scope).split(' ').filter(Boolean);
          if (requested.length && requested.every((s) => OPENID_SCOPES.has(s))) return undefined;
          return RESOURCE;
        },
        async useGrantedResource() { return true; },
        async getResourceServerInfo(_ctx, resource) { return resourceServerInfo(resource); },
      },
    },
    // Only user logins: client_credentials tokens (kind ClientCredentials) stay as they were.
    async extraTokenClaims(_ctx, token) {
      if (token.kind !== 'AccessToken' || !token.accountId) return undefined;
      return { preferred_username: token.accountId, groups: USER_GROUPS, 'wlcg.groups': USER_GROUPS };
    },
    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      ClientCredentials: ACCESS_TOKEN_TTL,
    },
    // oidc-provider's default rotates only public clients' refresh tokens.
    ...(ROTATE_REFRESH_TOKENS ? { rotateRefreshToken: true } : {}),
    async issueRefreshToken(_ctx, client, code) {
      return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
    },
    async renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
    // oidc-provider's SSRF protection (its dispatcher) refuses loopback addresses, where the relying
    // party under test listens: only IDP_BACKCHANNEL_LOGOUT_URI goes without it.
    async fetch(url, { dispatcher, ...options }) {
      const unchecked = BACKCHANNEL_LOGOUT_URI && url === new URL(BACKCHANNEL_LOGOUT_URI).href;
      return globalThis.fetch(url, unchecked ? options : { ...options, dispatcher });
    },
  };
  const instance = new Provider(issuer, configuration);
  if (TOKEN_EXCHANGE_MODE !== 'off') {
    instance.registerGrantType(TOKEN_EXCHANGE, tokenExchange, [
      'subject_token', 'subject_token_type', 'requested_token_type', 'scope', 'resource', 'audience',
      'actor_token', 'actor_token_type',
    ]);
  }
  instance.on('server_error', (_ctx, err) => log('server_error', err.stack || err));
  instance.on('grant.error', (_ctx, err) => log('grant.error', err.name, err.error_description || err.message));
  instance.on('backchannel.success', (_ctx, client) => log('backchannel.success', client.clientId));
  instance.on('backchannel.error', (_ctx, err, client) => log('backchannel.error', client.clientId, err.message));
  return instance;
}

// ---------------------------------------------------------------- token exchange (RFC 8693)

// The claims of a JWT access token this provider signed with one of its keys and that has not expired,
// else undefined. JWT access tokens are not stored (oidc-provider keeps only opaque ones), so the
// signature is what proves them.
function verifiedAccessToken(value) {
  const parts = String(value).split('.');
  if (parts.length !== 3) return undefined;
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url').toString());
    claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
  } catch {
    return undefined;
  }
  const jwk = keys.find((k) => k.kid === header?.kid && k.alg === header?.alg);
  if (!jwk || header.typ !== 'at+jwt') return undefined;
  const key = crypto.createPublicKey({ key: publicJwk(jwk), format: 'jwk' });
  const signature = Buffer.from(parts[2], 'base64url');
  const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
  const verifier = jwk.alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key;
  if (!crypto.verify('sha256', signed, verifier, signature)) return undefined;
  if (claims.iss !== issuer || !(claims.exp > Date.now() / 1000)) return undefined;
  return claims;
}

// A user's access token for a refresh token of the calling client, with the OpenID scopes asked for
// among those the subject token had (plus offline_access): a new grant, revocable like any other.
async function tokenExchange(ctx) {
  const { params, client } = ctx.oidc;
  const { Grant, RefreshToken, AccessToken } = ctx.oidc.provider;
  if (!params.subject_token || !params.subject_token_type) {
    throw new errors.InvalidRequest('subject_token and subject_token_type are required');
  }
  if (params.actor_token) throw new errors.InvalidRequest('delegation is not supported');
  if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.UnsupportedTokenType('only access tokens are exchanged');
  }
  const wanted = params.requested_token_type || (TOKEN_EXCHANGE_MODE === 'iam' ? ACCESS_TOKEN_TYPE : undefined);
  if (TOKEN_EXCHANGE_MODE === 'rfc' ? wanted !== REFRESH_TOKEN_TYPE : ![ACCESS_TOKEN_TYPE, REFRESH_TOKEN_TYPE].includes(wanted)) {
    throw new errors.InvalidRequest(`requested_token_type ${wanted || '(none)'} is not issued here`);
  }
  const subject = verifiedAccessToken(params.subject_token);
  // client_credentials tokens name the client as sub: only a user's token stands for a user
  if (!subject || !subject.sub || subject.sub === subject.client_id) {
    throw new errors.InvalidRequest('subject_token is not a valid user access token of this provider');
  }
  const had = new Set(String(subject.scope || '').split(' ').filter(Boolean));
  const asked = String(params.scope || '').split(' ').filter(Boolean);
  if (!asked.includes('offline_access')) {
    throw new errors.InvalidScope('a refresh token needs offline_access', 'offline_access');
  }
  const scope = asked.filter((s) => OPENID_SCOPES.has(s) && (had.has(s) || s === 'offline_access' || s === 'openid'));
  const grant = new Grant({ accountId: subject.sub, clientId: client.clientId });
  grant.addOIDCScope(scope.join(' '));
  const grantId = await grant.save();
  const refresh = new RefreshToken({
    accountId: subject.sub, client, grantId, gty: 'token_exchange', rotations: 0, scope: scope.join(' '),
  });
  const refreshToken = await refresh.save();
  if (TOKEN_EXCHANGE_MODE === 'rfc') {
    ctx.body = {
      access_token: refreshToken, issued_token_type: REFRESH_TOKEN_TYPE, token_type: 'N_A', scope: scope.join(' '),
    };
    return;
  }
  const access = new AccessToken({ accountId: subject.sub, client, grantId, gty: 'token_exchange', scope: scope.join(' ') });
  ctx.body = {
    access_token: await access.save(),
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: access.expiration,
    refresh_token: refreshToken,
    scope: scope.join(' '),
  };
}

// ---------------------------------------------------------------- wrapper + admin routes

const DISCOVERY = '/.well-known/openid-configuration';
const OAUTH_METADATA = '/.well-known/oauth-authorization-server';
const JWKS = '/jwks';
// oidc-provider's default routes of the endpoints a test may take down besides discovery and JWKS.
const TOKEN = '/token';
const REVOCATION = '/token/revocation';

let issuer;
let mountPath = '';
let provider;
let providerCallback;
let stats = {};
let downUntil = 0; // ms epoch; Infinity = until /up
let downTargets = new Set();
let delayMs = 0;
let delayTargets = new Set();

function swapProvider() {
  provider = buildProvider(issuer);
  providerCallback = provider.callback();
}

function sendJson(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(data);
}

function statsBody() {
  const total = Object.values(stats).reduce((a, b) => a + b, 0);
  return {
    requests: stats,
    discovery: stats[mountPath + DISCOVERY] || 0,
    jwks: stats[mountPath + JWKS] || 0,
    total,
    down: Date.now() < downUntil ? [...downTargets] : [],
    delay_ms: delayMs,
  };
}

function keysBody() {
  return {
    keys: keys.map(publicJwk),
    signing: Object.fromEntries(ALGS.map((alg) => [alg, signingKid(alg)])),
    access_token_alg: ACCESS_TOKEN_ALG,
  };
}

function admin(req, res, url) {
  const route = url.pathname.slice('/__test__'.length);
  const q = url.searchParams;
  const truthy = (v) => ['1', 'true', 'yes'].includes((v || '').toLowerCase());

  if (req.method === 'GET' && route === '/stats') return sendJson(res, 200, statsBody());
  if (req.method === 'GET' && route === '/keys') return sendJson(res, 200, keysBody());
  if (req.method === 'GET' && route === '/metadata') {
    // The discovery document whatever IDP_METADATA hides, for the test harness's own use.
    req.originalUrl = mountPath + DISCOVERY;
    req.url = DISCOVERY;
    return providerCallback(req, res);
  }
  if (req.method !== 'POST') return sendJson(res, 405, { error: 'method not allowed' });

  switch (route) {
    case '/rotate': {
      const algs = q.get('alg') ? [q.get('alg')] : ALGS;
      if (!algs.every((alg) => ALGS.includes(alg))) return sendJson(res, 400, { error: 'unknown alg' });
      const fresh = algs.map(generateKey);
      const dropped = truthy(q.get('drop_old')) ? keys.filter((k) => algs.includes(k.alg)).map((k) => k.kid) : [];
      keys = [...fresh, ...keys.filter((k) => !dropped.includes(k.kid))];
      saveKeys();
      swapProvider();
      log('rotate: new', fresh.map((k) => k.kid).join(','), dropped.length ? `dropped ${dropped.join(',')}` : '');
      return sendJson(res, 200, { ...keysBody(), added: fresh.map((k) => k.kid), dropped });
    }
    case '/reset-stats':
      stats = {};
      return sendJson(res, 200, statsBody());
    case '/down': {
      const seconds = q.get('seconds');
      downUntil = seconds ? Date.now() + Number(seconds) * 1000 : Infinity;
      downTargets = new Set((q.get('targets') || 'discovery,jwks').split(',').map((s) => s.trim()));
      log('down:', [...downTargets].join(','), seconds ? `for ${seconds}s` : 'until /up');
      return sendJson(res, 200, statsBody());
    }
    case '/up':
      downUntil = 0;
      log('up');
      return sendJson(res, 200, statsBody());
    case '/delay':
      delayMs = Number(q.get('ms') || 0);
      delayTargets = new Set((q.get('targets') || 'discovery,jwks,token,revocation').split(',').map((s) => s.trim()));
      log('delay:', delayMs, 'ms', [...delayTargets].join(','));
      return sendJson(res, 200, statsBody());
    default:
      return sendJson(res, 404, { error: 'unknown admin route' });
  }
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://idp.invalid');
  if (url.pathname.startsWith('/__test__/')) return admin(req, res, url);

  stats[url.pathname] = (stats[url.pathname] || 0) + 1;

  const target = {
    [mountPath + DISCOVERY]: 'discovery',
    [mountPath + JWKS]: 'jwks',
    [mountPath + TOKEN]: 'token',
    [mountPath + REVOCATION]: 'revocation',
  }[url.pathname];
  if (target) {
    if (delayMs && delayTargets.has(target)) await new Promise((resolve) => { setTimeout(resolve, delayMs); });
    if (Date.now() < downUntil && downTargets.has(target)) {
      res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1' });
      return res.end('issuer down (test)\n');
    }
  }

  // oidc-provider itself serves both documents under the issuer's path (appended, not inserted).
  const metadataPaths = [mountPath + DISCOVERY, mountPath + OAUTH_METADATA, OAUTH_METADATA + mountPath];
  if (METADATA !== 'openid' && metadataPaths.includes(url.pathname)) {
    if (METADATA === 'oauth' && url.pathname === OAUTH_METADATA + mountPath) {
      // The provider's own document (its fields are RFC 8414's), where RFC 8414 section 3.1 puts it.
      // oidc-provider finds its mount path from originalUrl: the one its own document has.
      req.originalUrl = mountPath + DISCOVERY;
      req.url = DISCOVERY;
      return providerCallback(req, res);
    }
    return sendJson(res, 404, { error: 'not_found' });
  }
  if (mountPath) {
    if (url.pathname !== mountPath && !url.pathname.startsWith(`${mountPath}/`)) {
      return sendJson(res, 404, { error: 'not_found' });
    }
    req.originalUrl = req.url;
    req.url = req.url.slice(mountPath.length) || '/';
  }
  return providerCallback(req, res);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    log('wrapper error', err.stack || err);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    else res.destroy();
  });
});

function shutdown(signal) {
  log(`stopping (${signal})`);
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (args['exit-on-stdin-close']) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}

server.listen(PORT, HOST, () => {
  const { port } = server.address();
  const hostForUrl = HOST.includes(':') ? `[${HOST}]` : HOST;
  issuer = (args.issuer || env.IDP_ISSUER || `http://${hostForUrl}:${port}`).replace('{port}', String(port));
  mountPath = new URL(issuer).pathname.replace(/\/$/, '');
  swapProvider();
  log(`listening on ${HOST}:${port}; access tokens ${ACCESS_TOKEN_ALG} for ${RESOURCE}; keys ${keys.map((k) => k.kid).join(',')}`);
  process.stdout.write(`READY ${issuer}\n`);
});
