"""URL layout: /health is public, and everything under /api is the protected resource."""

from __future__ import annotations

from django.urls import path

from fastn_site import views

urlpatterns = [
    path("health", views.health),
    path("api/me", views.me),
]
