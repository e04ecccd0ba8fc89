"""The URLs: each view kind serves a dashboard (any member), the settings (org:admin) and the new-invoice
page (the permission org:invoices:create)."""

from __future__ import annotations

from django.urls import path

from examples.django_app import views

urlpatterns = [
    path("orgs/<str:org_id>/dashboard", views.dashboard),
    path("orgs/<str:org_id>/settings", views.settings),
    path("orgs/<str:org_id>/invoices/new", views.new_invoice),
    path("cbv/orgs/<str:org_id>/dashboard", views.DashboardView.as_view()),
    path("cbv/orgs/<str:org_id>/settings", views.SettingsView.as_view()),
    path("cbv/orgs/<str:org_id>/invoices/new", views.NewInvoiceView.as_view()),
    path("async/orgs/<str:org_id>/dashboard", views.dashboard_async),
    path("async/orgs/<str:org_id>/settings", views.settings_async),
    path("async/orgs/<str:org_id>/invoices/new", views.new_invoice_async),
    path("api/orgs/<str:org_id>/dashboard", views.DashboardAPI.as_view()),
    path("api/orgs/<str:org_id>/settings", views.SettingsAPI.as_view()),
    path("api/orgs/<str:org_id>/invoices/new", views.NewInvoiceAPI.as_view()),
]
