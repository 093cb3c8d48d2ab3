// A certified OpenID Connect server (panva/oidc-provider) configured for HPCLab's tests:
// one confidential client (the hub), test users with a `groups` claim, the library's built-in
// login/consent pages. Usage: node provider.mjs  (settings from the environment, see below).
import Provider from "oidc-provider";

const port = Number(process.env.OIDC_PORT);
const users = JSON.parse(process.env.OIDC_USERS); // {"alice": {"groups": ["gpu-users"]}, ...}
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: process.env.OIDC_CLIENT_ID,
      client_secret: process.env.OIDC_CLIENT_SECRET,
      redirect_uris: [process.env.OIDC_REDIRECT_URI],
      grant_types: ["authorization_code"],
      response_types: ["code"],
    },
  ],
  scopes: ["openid", "profile", "groups"],
  claims: { openid: ["sub"], profile: ["preferred_username", "name"], groups: ["groups"] },
  async findAccount(ctx, id) {
    if (!users[id]) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: id, groups: users[id].groups };
      },
    };
  },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => false },
  cookies: { keys: ["hpclab-test-cookie-key"] },
});
provider.proxy = false;
provider.listen(port, "127.0.0.1", () => console.log(`oidc-provider listening on ${issuer}`));
