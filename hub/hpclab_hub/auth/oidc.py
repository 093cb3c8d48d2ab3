"""Single sign-on through oauthenticator's GenericOAuthenticator, with our user-name rule."""

from __future__ import annotations

from oauthenticator.generic import GenericOAuthenticator

from hpclab_hub.auth.login_security import UsernamePolicyMixin
from hpclab_hub.web.site_pages import SitePagesMixin


class HPCLabOIDCAuthenticator(SitePagesMixin, UsernamePolicyMixin, GenericOAuthenticator):
    """A provider's user name becomes a hub name only if it passes usernames.check_username (else login is refused)."""
