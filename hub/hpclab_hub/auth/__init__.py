"""Who may log in: the native accounts, LDAP and OIDC authenticators, with login guards and their pages."""
