"""The admin site, open to admins only.

Django's default admin lets in any active staff user. csbot's admin configures money (prices,
caps, thresholds, labour rates) for every team, so a staff flag alone is not enough: the user
must also be a superuser or hold the `admin` role. A manager accidentally made staff therefore
gets the admin's login page, not the admin.

Kept apart from `csbot.security` on purpose: INSTALLED_APPS imports this module while the app
registry is still loading, so it must not import models at module level.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse

ADMIN_ROLE = "admin"  # csbot.models.AgentProfile.Role.ADMIN (not importable this early)


class CsbotAdminSite(admin.AdminSite):
    site_header = "csbot administration"
    site_title = "csbot admin"

    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        if user.is_superuser:
            return True
        profile = getattr(user, "agent_profile", None)
        return profile is not None and profile.role == ADMIN_ROLE

    def login(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The same login rate limits as the console's login page (csbot.security).
        from csbot.security import login_wait, too_many_logins

        if request.method == "POST":
            wait = login_wait(request)
            if wait is not None:
                return too_many_logins(wait)
        return super().login(request, extra_context)


class CsbotAdminConfig(AdminConfig):
    default_site = "csbot.admin_site.CsbotAdminSite"
