from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from chatbot import views

urlpatterns = [
    path("", RedirectView.as_view(url="/demo/", permanent=False)),
    path("demo/", views.demo, name="demo"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
