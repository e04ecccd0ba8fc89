"""The URLs: each view kind serves a dashboard (any member) and the settings (org:admin)."""

from __future__ import annotations

from django.urls import path

from examples.django_app import views

urlpatterns = [
    path("orgs/<str:org_id>/dashboard", views.dashboard),
    path("orgs/<str:org_id>/settings", views.settings),
    path("cbv/orgs/<str:org_id>/dashboard", views.DashboardView.as_view()),
    path("cbv/orgs/<str:org_id>/settings", views.SettingsView.as_view()),
    path("async/orgs/<str:org_id>/dashboard", views.dashboard_async),
    path("async/orgs/<str:org_id>/settings", views.settings_async),
    path("api/orgs/<str:org_id>/dashboard", views.DashboardAPI.as_view()),
    path("api/orgs/<str:org_id>/settings", views.SettingsAPI.as_view()),
]
