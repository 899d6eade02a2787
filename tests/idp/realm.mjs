// OpenID provider for the test suite, laid out like the Keycloak realm "fastn".
//
// It runs oidc-provider (OpenID certified) behind the URL layout of a Keycloak
// realm, with two public PKCE clients, one test user and a plain HTML login
// form that tests can drive with HTTP requests alone.
//
// Usage:
//   node tests/idp/realm.mjs [--port 0] [--access-token-ttl 300] [--refresh-token-ttl 1800]
//
// Once listening it writes one JSON line to stdout:
//   {"issuer": "http://127.0.0.1:PORT/realms/fastn", "port": PORT}
// Logs go to stderr. It exits on SIGTERM, on SIGINT and when stdin closes, so
// run it with a stdin pipe that stays open for as long as it should live.
//
// NOTE: oidc-provider 9 supports Node.js 22 LTS and later. On Node.js 20 it
// logs an "Unsupported runtime" warning; the test suite passes on 20.20.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

// oidc-provider prints configuration notices with console.info, which writes
// to stdout. Stdout carries only the JSON line, so route them to stderr.
console.log = console.error;
console.info = console.error;

const HOST = '127.0.0.1';
const REALM_PATH = '/realms/fastn';
const PROTOCOL_PATH = '/protocol/openid-connect';
const LOGIN_PATH = `${REALM_PATH}/login-actions/authenticate/`;
const USERINFO_PATH = `${REALM_PATH}${PROTOCOL_PATH}/userinfo`;
const CLIENT_IDS = ['fastn-oauth', 'fastn-sdk'];
const SUPPORTED_SCOPES = ['openid', 'offline_access', 'profile', 'email'];
// Scopes that the "account" audience accepts. Keycloak lists the same three
// in the access token when a client requests them.
const ACCESS_TOKEN_SCOPES = 'openid profile email';
const MAX_FORM_BYTES = 16 * 1024;
const SHUTDOWN_GRACE_MS = 2000;

// The one user of the realm. Keycloak user ids are UUIDs, so this one is too.
const ALICE = {
  sub: '7b6a3d2e-4c1f-4e8a-9b5d-2f0c8e1a6d34',
  username: 'alice',
  password: 'alice-password',
  email: 'alice@example.test',
  emailVerified: true,
  givenName: 'Alice',
  familyName: 'Liddell',
};

function log(message) {
  process.stderr.write(`realm: ${message}\n`);
}

function parseCommandLine() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        port: { type: 'string', default: '0' },
        'access-token-ttl': { type: 'string', default: '300' },
        'refresh-token-ttl': { type: 'string', default: '1800' },
        'ignore-stdin': { type: 'boolean', default: false },
        'test-faults': { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
      strict: true,
    }));
  } catch (err) {
    log(`${err.message}. Run with --help for usage.`);
    process.exit(2);
  }

  if (values.help) {
    process.stderr.write(
      'usage: node realm.mjs [--port PORT] [--access-token-ttl SECONDS] [--refresh-token-ttl SECONDS]\n'
      + '  --port               TCP port on 127.0.0.1, 0 lets the OS choose a free one (default 0)\n'
      + '  --access-token-ttl   access token and ID token lifetime in seconds (default 300)\n'
      + '  --refresh-token-ttl  refresh token lifetime in seconds (default 1800)\n'
      + '  --ignore-stdin       keep running when stdin closes (for a shell in the background)\n'
      + '  --test-faults        serve POST /_test/token-faults?status=S&count=N, which makes the next N\n'
      + '                       token requests fail with HTTP status S and no OAuth error body, and\n'
      + '                       POST /_test/token-delay?ms=D&count=N, which delays the next N by D ms\n'
      + 'Without --ignore-stdin the server exits when its stdin closes, so a test run that dies\n'
      + 'takes it along.\n',
    );
    process.exit(0);
  }

  return {
    ignoreStdin: values['ignore-stdin'],
    testFaults: values['test-faults'],
    port: parseInteger('--port', values.port, 0, 65535),
    accessTokenTtl: parseInteger('--access-token-ttl', values['access-token-ttl'], 1, 86400),
    refreshTokenTtl: parseInteger('--refresh-token-ttl', values['refresh-token-ttl'], 1, 30 * 86400),
  };
}

function parseInteger(name, text, min, max) {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < min || value > max) {
    log(`invalid ${name} value ${JSON.stringify(text)}: expected an integer from ${min} to ${max}`);
    process.exit(2);
  }
  return value;
}

function isLoopbackHttpUrl(value) {
  const url = URL.parse(value);
  return url !== null
    && url.protocol === 'http:'
    && (url.hostname === '127.0.0.1' || url.hostname === 'localhost')
    && url.username === ''
    && url.password === ''
    && url.hash === '';
}

function escapeHtml(text) {
  return String(text)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

function htmlPage(title, body) {
  // No external stylesheets or fonts, so a browser that opens these pages
  // contacts no host other than the realm.
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
}

function accountClaims(scopes) {
  const claims = { sub: ALICE.sub };
  if (scopes.has('profile')) {
    claims.preferred_username = ALICE.username;
    claims.given_name = ALICE.givenName;
    claims.family_name = ALICE.familyName;
    claims.name = `${ALICE.givenName} ${ALICE.familyName}`;
  }
  if (scopes.has('email')) {
    claims.email = ALICE.email;
    claims.email_verified = ALICE.emailVerified;
  }
  return claims;
}

function findAccount(_ctx, sub) {
  if (sub !== ALICE.sub) {
    return undefined;
  }
  return {
    accountId: ALICE.sub,
    async claims(_use, scope) {
      return accountClaims(new Set(scope ? scope.split(' ') : []));
    },
  };
}

function generateSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    ...jwk,
    kid: crypto.randomBytes(12).toString('base64url'),
    alg: 'RS256',
    use: 'sig',
  };
}

// Grants every requested scope and claim at once, because the Keycloak
// clients that this realm emulates have consent turned off. Returning a saved
// grant here keeps oidc-provider from starting its consent prompt.
async function loadGrantWithoutConsent(ctx) {
  const { oidc } = ctx;
  const { Grant } = oidc.provider;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);

  let grant = grantId ? await Grant.find(grantId) : undefined;
  if (!grant) {
    grant = new Grant({ accountId: oidc.account.accountId, clientId: oidc.client.clientId });
  }

  const oidcScopes = [...oidc.requestParamOIDCScopes];
  if (oidcScopes.length) {
    grant.addOIDCScope(oidcScopes.join(' '));
  }
  const claims = [...oidc.requestParamClaims];
  if (claims.length) {
    grant.addOIDCClaims(claims);
  }
  for (const [indicator, resourceServer] of Object.entries(oidc.resourceServers)) {
    const scopes = [...oidc.requestParamScopes].filter((scope) => resourceServer.scopes.has(scope));
    if (scopes.length) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }

  await grant.save();
  return grant;
}

function buildConfiguration({ issuer, signingKey, accessTokenTtl, refreshTokenTtl }) {
  // A Keycloak realm without the experimental resource-indicators feature
  // ignores the resource parameter and puts "account" in the access token's
  // aud. Here every resource indicator maps to that audience, and requests
  // without one get this indicator.
  const defaultResource = `${issuer}/account`;
  const resourceServer = {
    scope: ACCESS_TOKEN_SCOPES,
    audience: 'account',
    accessTokenFormat: 'jwt',
    accessTokenTTL: accessTokenTtl,
    jwt: { sign: { alg: 'RS256' } },
  };
  // Tokens end with the session, as Keycloak's end with the SSO session, so
  // the session has to outlive every refresh token. 10 hours is a generous
  // bound for one test run.
  const sessionTtl = Math.max(10 * 3600, refreshTokenTtl);

  return {
    clients: CLIENT_IDS.map((clientId) => ({
      client_id: clientId,
      application_type: 'web',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      // Client.prototype.redirectUriAllowed below accepts any loopback URI.
      // These two only satisfy the client schema.
      redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback'],
      post_logout_redirect_uris: ['http://127.0.0.1/logout', 'http://localhost/logout'],
    })),
    jwks: { keys: [signingKey] },
    cookies: {
      keys: [crypto.randomBytes(32).toString('base64url')],
      // The realm serves plain http on 127.0.0.1, where a browser drops
      // cookies marked secure.
      long: { httpOnly: true, sameSite: 'lax', secure: false },
      short: { httpOnly: true, sameSite: 'lax', secure: false },
    },
    scopes: SUPPORTED_SCOPES,
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name', 'given_name', 'family_name'],
      email: ['email', 'email_verified'],
    },
    findAccount,
    loadExistingGrant: loadGrantWithoutConsent,
    responseTypes: ['code'],
    pkce: { required: () => true },
    routes: {
      authorization: `${PROTOCOL_PATH}/auth`,
      token: `${PROTOCOL_PATH}/token`,
      jwks: `${PROTOCOL_PATH}/certs`,
      userinfo: `${PROTOCOL_PATH}/userinfo`,
      revocation: `${PROTOCOL_PATH}/revoke`,
      end_session: `${PROTOCOL_PATH}/logout`,
      introspection: `${PROTOCOL_PATH}/token/introspect`,
      pushed_authorization_request: `${PROTOCOL_PATH}/ext/par/request`,
    },
    interactions: {
      url: (_ctx, interaction) => `${LOGIN_PATH}${interaction.uid}`,
    },
    features: {
      devInteractions: { enabled: false },
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
      },
      // Requests reach userinfo through handleUserinfo, because oidc-provider
      // looks tokens up in its store and does not store JWT access tokens.
      // Enabled here so that discovery lists the endpoint.
      userinfo: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: renderLogoutPage,
        postLogoutSuccessSource: renderLogoutDonePage,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => (oneOf ? oneOf[0] : defaultResource),
        // Without this, oidc-provider issues an opaque, audience-less token
        // for the userinfo endpoint whenever the scope contains openid.
        useGrantedResource: async () => true,
        getResourceServerInfo: async () => resourceServer,
      },
    },
    formats: {
      customizers: {
        jwt: shapeAccessTokenLikeKeycloak,
      },
    },
    extraTokenClaims: async (_ctx, token) => {
      if (token.kind !== 'AccessToken') {
        return undefined;
      }
      const { sub, ...profile } = accountClaims(token.scopes);
      return { typ: 'Bearer', azp: token.clientId, ...profile };
    },
    // Keycloak issues a refresh token on every code exchange, not only when
    // the client asks for offline_access.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    // Every refresh grant issues a new refresh token and spends the old one,
    // as Keycloak does with "Revoke Refresh Token" on. NOTE: oidc-provider
    // treats reuse of a spent refresh token as theft and revokes the grant,
    // so the refresh token that replaced it stops working too.
    rotateRefreshToken: () => true,
    ttl: {
      AccessToken: accessTokenTtl,
      IdToken: accessTokenTtl,
      AuthorizationCode: 60,
      Interaction: 10 * 60,
      RefreshToken: refreshTokenTtl,
      Session: sessionTtl,
      Grant: sessionTtl,
    },
    clientBasedCORS: (_ctx, origin) => isLoopbackHttpUrl(origin),
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      const description = out.error_description ? `<p>${escapeHtml(out.error_description)}</p>` : '';
      ctx.body = htmlPage('Error', `<p id="error">${escapeHtml(out.error)}</p>${description}`);
    },
    // Nothing in this realm needs an outgoing request, and tests must not
    // contact any other host.
    fetch: async (url) => {
      throw new Error(`outgoing request to ${url} rejected: this test realm makes no network requests`);
    },
  };
}

// Shapes JWT access tokens like Keycloak's: header typ "JWT" in place of
// "at+jwt" and no client_id claim, since Keycloak names the client in azp.
function shapeAccessTokenLikeKeycloak(_ctx, _token, jwt) {
  jwt.header = { typ: 'JWT' };
  delete jwt.payload.client_id;
}

async function renderLogoutPage(ctx, form) {
  ctx.type = 'html';
  ctx.body = htmlPage('Sign out', `${form}
<p>Do you want to sign out?</p>
<button type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>
<button type="submit" form="op.logoutForm">Stay signed in</button>`);
}

async function renderLogoutDonePage(ctx) {
  ctx.type = 'html';
  ctx.body = htmlPage('Signed out', '<p>You are signed out.</p>');
}

function createProvider(options) {
  const provider = new Provider(options.issuer, buildConfiguration(options));

  // Test runs bind random ports, so every http loopback URI is a valid
  // redirect target, as in a Keycloak client with "http://127.0.0.1:*" style
  // wildcards. Other URIs are rejected.
  provider.Client.prototype.redirectUriAllowed = isLoopbackHttpUrl;
  provider.Client.prototype.postLogoutRedirectUriAllowed = isLoopbackHttpUrl;

  // error_detail names the failed check ("client mismatch", "refresh token
  // already used") and carries no token values.
  const requestPath = (ctx) => `${ctx.req.baseUrl ?? ''}${ctx.path}`;
  const logError = (ctx, err) => {
    const detail = err.error_detail || err.error_description;
    log(`${ctx.method} ${requestPath(ctx)} failed with ${err.error || err.message}${detail ? `: ${detail}` : ''}`);
  };
  for (const event of ['authorization.error', 'grant.error', 'end_session.error',
    'revocation.error', 'userinfo.error', 'discovery.error', 'jwks.error']) {
    provider.on(event, logError);
  }
  provider.on('server_error', (ctx, err) => {
    log(`${ctx.method} ${requestPath(ctx)} failed with an internal error: ${err.stack || err}`);
  });

  return provider;
}

function sendHtml(res, status, title, body) {
  const text = htmlPage(title, body);
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

function sendJson(res, status, value, headers = {}) {
  const text = JSON.stringify(value);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) {
      throw new RangeError(`form body larger than ${MAX_FORM_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function loginForm(uid, { username = '', errorMessage } = {}) {
  const error = errorMessage ? `<p id="input-error" role="alert">${escapeHtml(errorMessage)}</p>\n` : '';
  return `${error}<form id="kc-form-login" method="post" action="${escapeHtml(LOGIN_PATH + uid)}">
<label for="username">Username or email</label>
<input id="username" name="username" type="text" autocomplete="username" value="${escapeHtml(username)}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password">
<button type="submit" name="action" value="login">Sign in</button>
<button type="submit" name="action" value="deny">Cancel</button>
</form>`;
}

function credentialsMatch(username, password) {
  const usernameMatches = username === ALICE.username || username === ALICE.email;
  return usernameMatches && password === ALICE.password;
}

// Serves the login page of an interaction and handles its form post. The
// interaction is found through the cookie that oidc-provider set, and the
// uid in the path has to name that same interaction.
async function handleLogin(provider, req, res, uid) {
  let interaction;
  try {
    interaction = await provider.interactionDetails(req, res);
  } catch (err) {
    if (!(err instanceof errors.SessionNotFound)) {
      throw err;
    }
    log(`login page requested without a valid interaction: ${err.error_description || err.message}`);
    sendHtml(res, 400, 'Sign-in expired', '<p>This sign-in request is unknown or expired. Start the sign-in again.</p>');
    return;
  }

  if (interaction.uid !== uid) {
    log(`login page ${uid} requested while the cookie names interaction ${interaction.uid}`);
    sendHtml(res, 400, 'Sign-in expired', '<p>This page does not belong to the current sign-in. Start the sign-in again.</p>');
    return;
  }
  if (interaction.prompt.name !== 'login') {
    log(`interaction ${uid} requests the unsupported prompt ${interaction.prompt.name}`);
    sendHtml(res, 500, 'Unsupported prompt', `<p>This realm does not handle the ${escapeHtml(interaction.prompt.name)} prompt.</p>`);
    return;
  }

  if (req.method === 'GET') {
    sendHtml(res, 200, 'Sign in to fastn', loginForm(uid));
    return;
  }
  if (req.method !== 'POST') {
    log(`login page does not accept method ${req.method}`);
    res.writeHead(405, { allow: 'GET, POST' });
    res.end();
    return;
  }

  const form = await readForm(req);
  const clientId = interaction.params.client_id;
  const action = form.get('action');

  if (action === 'deny') {
    log(`user cancelled the sign-in for client ${clientId}`);
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
    return;
  }
  if (action !== 'login') {
    log(`login form posted with invalid action ${JSON.stringify(action)} for client ${clientId}`);
    sendHtml(res, 400, 'Invalid request', '<p>The form field action must be login or deny.</p>');
    return;
  }

  const username = form.get('username') ?? '';
  if (!credentialsMatch(username, form.get('password') ?? '')) {
    log(`sign-in failed with invalid credentials at client ${clientId}`);
    sendHtml(res, 200, 'Sign in to fastn', loginForm(uid, {
      username,
      errorMessage: 'Invalid username or password.',
    }));
    return;
  }

  log(`user ${ALICE.username} signed in for client ${clientId}`);
  await provider.interactionFinished(req, res, {
    login: { accountId: ALICE.sub },
  }, { mergeWithLastSubmission: false });
}

function bearerToken(req) {
  const match = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  return match ? match[1] : undefined;
}

// Returns the payload of a JWT access token from this realm, or undefined
// when the signature, issuer, type or lifetime do not check out.
function verifyAccessToken(token, { issuer, publicKey, kid }) {
  const parts = token.split('.');
  if (parts.length !== 3) {
    return undefined;
  }
  let header;
  let payload;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
    payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (header.alg !== 'RS256' || header.kid !== kid) {
    return undefined;
  }
  const signedData = Buffer.from(`${parts[0]}.${parts[1]}`);
  const signature = Buffer.from(parts[2], 'base64url');
  if (!crypto.verify('sha256', signedData, publicKey, signature)) {
    return undefined;
  }
  const now = Math.floor(Date.now() / 1000);
  if (payload.iss !== issuer || payload.typ !== 'Bearer' || !(payload.exp > now)) {
    return undefined;
  }
  return payload;
}

// Serves the userinfo endpoint for the realm's JWT access tokens.
// NOTE: unlike Keycloak, this does not check that the user's session is
// still active, so a token keeps working here after logout until it expires.
function handleUserinfo(req, res, keyInfo) {
  if (req.method !== 'GET' && req.method !== 'POST') {
    log(`userinfo does not accept method ${req.method}`);
    res.writeHead(405, { allow: 'GET, POST' });
    res.end();
    return;
  }
  const token = bearerToken(req);
  if (!token) {
    log('userinfo request without a bearer token');
    sendJson(res, 401, { error: 'invalid_request', error_description: 'missing bearer token' }, {
      'www-authenticate': 'Bearer realm="fastn"',
    });
    return;
  }
  const payload = verifyAccessToken(token, keyInfo);
  const scopes = new Set(typeof payload?.scope === 'string' ? payload.scope.split(' ') : []);
  if (!payload || payload.sub !== ALICE.sub || !scopes.has('openid')) {
    log('userinfo request with an invalid or expired access token');
    sendJson(res, 401, { error: 'invalid_token', error_description: 'Token verification failed' }, {
      'www-authenticate': 'Bearer realm="fastn", error="invalid_token"',
    });
    return;
  }
  sendJson(res, 200, accountClaims(scopes));
}

// Routes a request to the login page, the userinfo endpoint or oidc-provider.
// oidc-provider is mounted at the realm path the way Express mounts an app:
// req.url loses the prefix, and originalUrl and baseUrl keep it, so that the
// URLs it builds carry the prefix again.
function createRequestHandler(provider, keyInfo, testFaults) {
  const providerCallback = provider.callback();
  // Injected failures of the token endpoint, as a rate limiter or a proxy in
  // front of a real realm would produce them: a status and no OAuth body.
  const tokenFaults = { status: 0, remaining: 0, delayMs: 0, delayed: 0 };

  return (req, res) => {
    const { pathname, searchParams } = new URL(req.url, 'http://127.0.0.1');
    let handled;

    if (testFaults && pathname === '/_test/token-faults' && req.method === 'POST') {
      const status = Number(searchParams.get('status'));
      const count = Number(searchParams.get('count'));
      if (!Number.isInteger(status) || status < 400 || status > 599 || !Number.isInteger(count) || count < 0) {
        sendJson(res, 400, { error: 'invalid_request', error_description: 'status must be 400-599, count 0 or more' });
        return;
      }
      tokenFaults.status = status;
      tokenFaults.remaining = count;
      log(`the next ${count} token requests fail with HTTP ${status}`);
      sendJson(res, 200, { status, count });
      return;
    }
    if (testFaults && pathname === '/_test/token-delay' && req.method === 'POST') {
      const delayMs = Number(searchParams.get('ms'));
      const count = Number(searchParams.get('count'));
      if (!Number.isInteger(delayMs) || delayMs < 0 || delayMs > 30000 || !Number.isInteger(count) || count < 0) {
        sendJson(res, 400, { error: 'invalid_request', error_description: 'ms must be 0-30000, count 0 or more' });
        return;
      }
      tokenFaults.delayMs = delayMs;
      tokenFaults.delayed = count;
      log(`the next ${count} token requests are delayed by ${delayMs} ms`);
      sendJson(res, 200, { ms: delayMs, count });
      return;
    }
    if (tokenFaults.delayed > 0 && pathname === `${REALM_PATH}/protocol/openid-connect/token`) {
      tokenFaults.delayed -= 1;
      req.pause();
      setTimeout(() => {
        req.resume();
        req.originalUrl = req.url;
        req.baseUrl = REALM_PATH;
        req.url = req.url.slice(REALM_PATH.length) || '/';
        providerCallback(req, res);
      }, tokenFaults.delayMs);
      return;
    }
    if (tokenFaults.remaining > 0 && pathname === `${REALM_PATH}/protocol/openid-connect/token`) {
      tokenFaults.remaining -= 1;
      sendJson(res, tokenFaults.status, { message: 'injected fault' }, { 'retry-after': '1' });
      return;
    }

    if (pathname.startsWith(LOGIN_PATH)) {
      handled = handleLogin(provider, req, res, pathname.slice(LOGIN_PATH.length));
    } else if (pathname === USERINFO_PATH) {
      handled = Promise.resolve().then(() => handleUserinfo(req, res, keyInfo));
    } else if (pathname === REALM_PATH || pathname.startsWith(`${REALM_PATH}/`)) {
      req.originalUrl = req.url;
      req.baseUrl = REALM_PATH;
      req.url = req.url.slice(REALM_PATH.length) || '/';
      providerCallback(req, res);
      return;
    } else {
      log(`${req.method} ${pathname} not found: the realm serves only paths under ${REALM_PATH}`);
      sendJson(res, 404, { error: 'not_found', error_description: `no realm serves ${pathname}` });
      return;
    }

    handled.catch((err) => {
      log(`${req.method} ${pathname} failed: ${err.stack || err}`);
      if (!res.headersSent) {
        sendHtml(res, err instanceof RangeError ? 413 : 500, 'Error', '<p>The request failed.</p>');
      } else {
        res.destroy();
      }
    });
  };
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: HOST, port }, () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });
}

function installShutdown(server, ignoreStdin) {
  let stopping = false;
  const stop = (reason) => {
    if (stopping) {
      return;
    }
    stopping = true;
    log(`stopping: ${reason}`);
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), SHUTDOWN_GRACE_MS).unref();
  };

  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  if (ignoreStdin) {
    return;
  }
  process.stdin.on('end', () => stop('stdin closed'));
  process.stdin.on('error', (err) => stop(`stdin failed: ${err.message}`));
  // Reading keeps the stream flowing, so 'end' fires once the parent closes it.
  process.stdin.on('data', () => {});
  process.stdin.resume();
}

async function main() {
  const {
    port: requestedPort, accessTokenTtl, refreshTokenTtl, ignoreStdin, testFaults,
  } = parseCommandLine();

  // The issuer contains the port, and with --port 0 the port is known only
  // once the socket listens, so the provider is created after listening.
  const server = http.createServer();
  installShutdown(server, ignoreStdin);
  const port = await listen(server, requestedPort);
  const issuer = `http://${HOST}:${port}${REALM_PATH}`;

  const signingKey = generateSigningKey();
  const provider = createProvider({
    issuer, signingKey, accessTokenTtl, refreshTokenTtl,
  });
  const keyInfo = {
    issuer,
    kid: signingKey.kid,
    publicKey: crypto.createPublicKey({ key: signingKey, format: 'jwk' }),
  };
  server.on('request', createRequestHandler(provider, keyInfo, testFaults));

  log(`listening on ${issuer} (access token TTL ${accessTokenTtl} s, refresh token TTL ${refreshTokenTtl} s)`);
  process.stdout.write(`{"issuer": ${JSON.stringify(issuer)}, "port": ${port}}\n`);
}

main().catch((err) => {
  log(`failed to start: ${err.stack || err}`);
  process.exit(1);
});
