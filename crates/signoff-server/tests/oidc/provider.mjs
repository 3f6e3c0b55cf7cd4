// A real OpenID provider for signoff's tests: panva's oidc-provider (the
// version package-lock.json pins), started by tests/support/oidc.rs as
// `node provider.mjs`. Its one line on stdout is `issuer http://127.0.0.1:PORT`;
// everything else (the library's notices included) goes to stderr.
//
// Environment:
//   SIGNOFF_OIDC_PROVIDER_DIR  where `npm ci` installed package-lock.json
//                              (the module is imported from its node_modules)
//   CLIENT_ID, CLIENT_SECRET   the one confidential client (client_secret_basic)
//   REDIRECT_URI, BACKCHANNEL_LOGOUT_URI, POST_LOGOUT_REDIRECT_URI  its URIs
//   PORT                       optional; 0 (a free port) when absent
//
// Accounts: any login name signs in (devInteractions' form, any password).
// Claims: sub = preferred_username = the login, email = LOGIN@example.com
// (verified), groups = ["admins", "staff"] for carol, ["staff"] for anyone
// else; they go into the ID token for the scopes asked (openid, profile,
// email, groups), with `sid`.
//
// Test-only routes on the same server, beside the provider's own:
//   POST /test/backchannel?sub=ID[&sid=SID]  the provider signs a logout token
//        for ID (with `sid` SID, or with `sub` alone when no sid is given) and
//        POSTs it to BACKCHANNEL_LOGOUT_URI: 200 {"sent":true}, or 500
//        {"error":…} when that did not answer 200/204.
//   POST /test/logout?sub=ID  ends every provider session of ID, as an
//        administrator's "sign out" at a provider does: one logout token per
//        session (with the client's sid of that session) to the client, then
//        the session is gone. 200 {"sids":[…]}, or 500 {"error":…}.
//   GET  /test/sessions?sub=ID  200 {"sids":[…]}: the client's sid of each
//        live provider session of ID.

import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { format } from 'node:util';

// The library prints notices with console.info and warnings with
// console.warn; stdout is for the issuer line alone. Expected development
// notices (this runtime, devInteractions, defaults left in place) are
// dropped; anything else goes to stderr.
const expected = [
  'Unsupported runtime',
  'devInteractions is enabled',
  'function called, you SHOULD change it',
];
const toStderr = (...args) => {
  const line = format(...args);
  if (!expected.some((e) => line.includes(e))) {
    process.stderr.write(`${line}\n`);
  }
};
console.log = toStderr;
console.info = toStderr;
console.warn = toStderr;

function need(name) {
  const value = process.env[name];
  if (!value) {
    process.stderr.write(`provider.mjs: ${name} is not set\n`);
    process.exit(2);
  }
  return value;
}

const moduleDir = need('SIGNOFF_OIDC_PROVIDER_DIR');
const clientId = need('CLIENT_ID');
const clientSecret = need('CLIENT_SECRET');
const redirectUri = need('REDIRECT_URI');
const backchannelLogoutUri = need('BACKCHANNEL_LOGOUT_URI');
const postLogoutRedirectUri = need('POST_LOGOUT_REDIRECT_URI');

// Where start-up time goes, in the log a failed start prints.
const t0 = Date.now();
const mark = (what) => process.stderr.write(`provider.mjs: ${what} after ${Date.now() - t0} ms\n`);

const entry = createRequire(join(moduleDir, 'package.json')).resolve('oidc-provider');
const { default: Provider } = await import(pathToFileURL(entry).href);
mark('oidc-provider imported');

// The test that started this process may die without killing it: then
// this process is handed to another parent, and ends itself.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 500).unref();

// All the provider's state, in memory, where the test routes can see it.
const store = new Map();
const sessionUids = new Map();
const userCodes = new Map();

class Adapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const expires = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(this.key(id), { payload, expires });
    if (this.model === 'Session') sessionUids.set(payload.uid, id);
    if (payload.userCode) userCodes.set(payload.userCode, id);
  }

  async find(id) {
    const key = this.key(id);
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expires <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) {
    const id = sessionUids.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = userCodes.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const [key, { payload }] of store) {
      if (payload.grantId === grantId) store.delete(key);
    }
  }
}

// The live provider sessions of `sub`: [id, the client's sid].
function sessionsOf(sub) {
  const found = [];
  const now = Date.now();
  for (const [key, { payload, expires }] of store) {
    if (key.startsWith('Session:') && expires > now && payload.accountId === sub) {
      found.push([key.slice('Session:'.length), payload.authorizations?.[clientId]?.sid]);
    }
  }
  return found;
}

const isLoopback = (url) => ['127.0.0.1', 'localhost', '[::1]'].includes(new URL(url).hostname);

// The key leaves the generator as PEM and is read back, so the KeyObject
// exported below shares no lock with the generator's job. Exporting the
// generator's own KeyObject as a JWK can deadlock Node 20: a garbage
// collection during the export finalizes the job, whose destructor takes
// the lock the export holds. Under load here the process then hung before
// printing its issuer, as it did once in CI, and gdb showed ~KeyGenJob
// waiting inside ExportJWKRsaKey.
const { privateKey: privatePem } = generateKeyPairSync('rsa', {
  modulusLength: 2048,
  publicKeyEncoding: { type: 'spki', format: 'pem' },
  privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
});
mark('signing key made');
const signingKey = {
  ...createPrivateKey(privatePem).export({ format: 'jwk' }),
  kid: `test-${randomBytes(6).toString('hex')}`,
  alg: 'RS256',
  use: 'sig',
};

const scopes = 'openid profile email groups';

const configuration = {
  adapter: Adapter,
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    token_endpoint_auth_method: 'client_secret_basic',
    response_types: ['code'],
    grant_types: ['authorization_code'],
    redirect_uris: [redirectUri],
    post_logout_redirect_uris: [postLogoutRedirectUri],
    backchannel_logout_uri: backchannelLogoutUri,
    backchannel_logout_session_required: true,
    id_token_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  claims: {
    acr: null,
    auth_time: null,
    iss: null,
    sid: null,
    openid: ['sub'],
    profile: ['preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // Claims of the scopes asked for go into the ID token itself, not only
  // to the userinfo endpoint.
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: id,
          email: `${id}@example.com`,
          email_verified: true,
          groups: id === 'carol' ? ['admins', 'staff'] : ['staff'],
        };
      },
    };
  },
  // The client is first-party: no consent page; it is granted every scope.
  async loadExistingGrant(ctx) {
    const { Grant } = ctx.oidc.provider;
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const grant = await Grant.find(grantId);
      if (grant) return grant;
    }
    if (!ctx.oidc.session.accountId) return undefined;
    const grant = new Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope(scopes);
    await grant.save();
    return grant;
  },
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        // `form` is the library's (a hidden xsrf field); the buttons submit it.
        ctx.body = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sign out</title></head>
<body><h1>Sign out of the test provider?</h1>
${form}
<button type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>
</body></html>`;
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Signed out</title></head><body><h1>Signed out of the test provider</h1></body></html>';
      },
    },
  },
  async renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
  // Back-channel logout tokens go to the tests' own servers on loopback,
  // which the library's SSRF guard (a dispatcher that refuses special-use
  // addresses) would refuse: it is dropped for loopback URLs alone.
  fetch(url, options) {
    if (isLoopback(url)) delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 3600,
    Session: 24 * 3600,
    Grant: 24 * 3600,
  },
};

function answer(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function testRoute(provider, req, res, url) {
  const sub = url.searchParams.get('sub');
  if (!sub) return answer(res, 400, { error: 'sub is missing' });
  const route = `${req.method} ${url.pathname}`;
  if (route === 'GET /test/sessions') {
    return answer(res, 200, { sids: sessionsOf(sub).map(([, sid]) => sid).filter(Boolean) });
  }
  if (route === 'POST /test/backchannel') {
    const client = await provider.Client.find(clientId);
    await client.backchannelLogout(sub, url.searchParams.get('sid') ?? undefined);
    return answer(res, 200, { sent: true });
  }
  if (route === 'POST /test/logout') {
    const client = await provider.Client.find(clientId);
    const sids = [];
    for (const [id, sid] of sessionsOf(sub)) {
      if (sid) {
        await client.backchannelLogout(sub, sid);
        sids.push(sid);
      }
      await new Adapter('Session').destroy(id);
    }
    return answer(res, 200, { sids });
  }
  return answer(res, 404, { error: `no test route ${route}` });
}

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(process.env.PORT || 0), '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;
const provider = new Provider(issuer, configuration);
for (const event of ['server_error', 'backchannel.error']) {
  provider.on(event, (...args) => process.stderr.write(`${event}: ${format(...args.slice(1))}\n`));
}
const callback = provider.callback();

server.on('request', (req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname.startsWith('/test/')) {
    testRoute(provider, req, res, url).catch((err) => {
      process.stderr.write(`${url.pathname}: ${err.stack || err}\n`);
      answer(res, 500, { error: String(err.message || err) });
    });
    return;
  }
  // The library's pages @import a web font: no request leaves this machine.
  res.setHeader('content-security-policy', "style-src 'unsafe-inline'; font-src 'none'");
  callback(req, res);
});

mark('listening');
process.stdout.write(`issuer ${issuer}\n`);
