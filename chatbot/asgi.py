"""ASGI entry point, served by daphne: HTTP through Django, websockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
# Set up Django (apps, models) before importing anything that touches the ORM.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from chatbot import autobahn_tuning  # noqa: E402
from chatbot.admission import ConnectAdmission  # noqa: E402
from chatbot.lifecycle import ProcessLifecycle  # noqa: E402
from chatbot.routing import websocket_urlpatterns  # noqa: E402

autobahn_tuning.install()

if settings.EMBEDDING_PRELOAD:
    from knowledge.embeddings import preload

    preload()  # in the background: the server answers at once, the model is ready soon after

# Heartbeat, replies in flight, reaper: started with the process (chatbot.lifecycle).
application = ProcessLifecycle(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            # A burst of new chat sockets past the bound is closed with 1013 (chatbot.admission).
            "websocket": ConnectAdmission(
                URLRouter(websocket_urlpatterns), limit=settings.CHAT_CONNECTS_PENDING_MAX
            ),
        }
    )
)
