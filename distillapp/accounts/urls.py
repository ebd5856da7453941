from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from distillapp.accounts import views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("orgs/switch/", views.org_switch, name="org_switch"),
    path("orgs/new/", views.org_create, name="org_create"),
    path("orgs/<int:org_id>/members/", views.org_members_page, name="org_members"),
    path("orgs/<int:org_id>/members/add/", views.org_member_add, name="org_member_add"),
    path(
        "orgs/<int:org_id>/members/<str:username>/role/",
        views.org_member_role,
        name="org_member_role",
    ),
    path(
        "orgs/<int:org_id>/members/<str:username>/remove/",
        views.org_member_remove,
        name="org_member_remove",
    ),
    path("orgs/<int:org_id>/invitations/new/", views.invitation_create, name="invitation_create"),
    path(
        "orgs/<int:org_id>/invitations/<int:invitation_id>/revoke/",
        views.invitation_revoke,
        name="invitation_revoke",
    ),
    path("orgs/<int:org_id>/audit/", views.org_audit_page, name="org_audit"),
    # The token travels in the query string, so this public page has no object id in its path.
    path("invite/", views.invitation_accept, name="invitation_accept"),
    path("signup/", views.signup, name="signup"),
    path("account/password/", views.password_change, name="password_change"),
    path("account/tokens/", views.tokens_page, name="tokens"),
    path("account/tokens/new/", views.token_create, name="token_create"),
    path("account/tokens/<int:token_id>/revoke/", views.token_revoke, name="token_revoke"),
]
