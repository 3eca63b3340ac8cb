from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from agents.views import conversations, corrections, gaps, live, stats

app_name = "agents"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="agents:conversations", permanent=False)),
    path("login/", auth_views.LoginView.as_view(template_name="agents/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="agents:login"), name="logout"),
    path("conversations/", conversations.conversation_list, name="conversations"),
    path(
        "conversations/export.<str:fmt>",
        conversations.conversation_list_export,
        name="conversations_export",
    ),
    path("conversations/<int:pk>/", conversations.transcript, name="transcript"),
    path(
        "conversations/<int:pk>/export.<str:fmt>", conversations.transcript_export, name="transcript_export"
    ),
    path("conversations/<int:pk>/notes/", conversations.note_add, name="note_add"),
    path("conversations/<int:pk>/labels/", conversations.labels_set, name="labels_set"),
    path("conversations/<int:pk>/review/", conversations.review_set, name="review_set"),
    path("messages/<int:pk>/correct/", corrections.correct, name="correct"),
    path("gaps/", gaps.gap_list, name="gaps"),
    path("stats/", stats.statistics, name="stats"),
    path("live/", live.console, name="live"),
]
