from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from chatbot import views

urlpatterns = [
    path("", RedirectView.as_view(url="/demo/", permanent=False)),
    path("demo/", views.demo, name="demo"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("agent/", include("agents.urls")),
    path("admin/", admin.site.urls),
]
