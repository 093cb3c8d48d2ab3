"""LDAP login whose group memberships (LDAP group DNs) become hub groups, admin rights and login rights."""

from __future__ import annotations

from ldapauthenticator import LDAPAuthenticator
from traitlets import Dict, List

from hpclab_hub.auth.login_security import LoginLockoutMixin, UsernamePolicyMixin
from hpclab_hub.web.site_pages import SitePagesMixin


class HPCLabLDAPAuthenticator(SitePagesMixin, UsernamePolicyMixin, LoginLockoutMixin, LDAPAuthenticator):
    """jupyterhub-ldapauthenticator plus: LDAP groups -> hub groups (manage_groups), admin groups, login groups;
    our user-name rule and login lockout (repeated wrong passwords never reach the directory)."""

    group_dns = Dict(help="Hub group name -> LDAP group DN.").tag(config=True)
    admin_group_names: List[str] = List(help="Hub groups whose members are admins.").tag(config=True)
    login_group_names: List[str] = List(help="Hub groups allowed to log in; empty = any LDAP account.").tag(config=True)

    async def authenticate(self, handler, data):
        # LDAPAuthenticator only looks groups up for DNs in allowed_groups; our own check_allowed decides login
        self.allowed_groups = list(self.group_dns.values()) or None
        model = await super().authenticate(handler, data)
        if not model:
            return model
        member_of = set((model.get("auth_state") or {}).get("ldap_groups", []))
        groups = sorted(name for name, dn in self.group_dns.items() if dn in member_of)
        model["groups"] = groups
        if set(groups) & set(self.admin_group_names):
            model["admin"] = True
        return model

    async def check_allowed(self, username, auth_model):
        if not self.login_group_names:
            return True  # a successful LDAP bind is enough
        groups = set((auth_model or {}).get("groups") or [])
        return bool(groups & set(self.login_group_names)) or username in self.admin_users
