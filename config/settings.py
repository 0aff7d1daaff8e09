"""Settings for rlhf-studio, read from the environment (names in SPEC section 10).

Defaults suit a laptop: SQLite in ./var, DEBUG off. `make demo` turns DEBUG on; production
sets SECRET_KEY, ALLOWED_HOSTS and usually DATABASE_URL.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
DATA_DIR = Path(os.environ.get("DATA_DIR") or BASE_DIR / "var").resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
# Used as given (stripping would change every signature and pseudonym of a key that has
# spaces); a key of nothing but spaces is no key.
if not SECRET_KEY.strip():
    # Export pseudonyms are an HMAC of this key: a public fallback would make them
    # reversible, so without DEBUG there is none (SPEC section 11).
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: set it in the environment (any long random string), "
            "or DEBUG=1 for local development."
        )
    SECRET_KEY = "django-insecure-dev-only-set-SECRET_KEY-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "lineage",
    "annotation",
    "training",
    "simulation",
]

MIDDLEWARE = [
    "config.middleware.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "config.middleware.StaffImportBodyMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.DatabaseBusyMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Templates live in the apps (annotation/templates/), so an installed wheel carries
        # them; none overrides a template of an app listed earlier (tests/test_packaging.py).
        "DIRS": [],
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

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions make SQLite writers queue instead of failing on lock upgrade,
    # which is what keeps the assignment engine from over-assigning under concurrency.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or BASE_DIR / "staticfiles")
# Static files live in annotation/static/ (found by the app finder, carried by the wheel).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Shared by every worker: login throttling and DRF throttles count in the database.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "rlhf_studio_cache",
    }
}
# Sign-in attempts per window (annotation/services/signin.py), every path alike: per
# (username, address) first, so one person's typos lock out neither the account nor the
# office; per username and per address far higher, against spraying.
AUTHENTICATION_BACKENDS = ["annotation.auth.ThrottledModelBackend"]
LOGIN_FAILURE_LIMIT = int(os.environ.get("LOGIN_FAILURE_LIMIT", "10"))
LOGIN_FAILURE_LIMIT_PER_USER = int(os.environ.get("LOGIN_FAILURE_LIMIT_PER_USER", "50"))
LOGIN_FAILURE_LIMIT_PER_ADDRESS = int(os.environ.get("LOGIN_FAILURE_LIMIT_PER_ADDRESS", "100"))
LOGIN_FAILURE_WINDOW = int(os.environ.get("LOGIN_FAILURE_WINDOW", "300"))  # seconds

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    # Token first: its `WWW-Authenticate` header is what makes anonymous calls answer 401
    # (DRF answers 403 when the first authenticator names no scheme). Session auth keeps
    # DRF's CSRF check for browser calls.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "annotation.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["annotation.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "annotation.api.exceptions.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "login": os.environ.get("THROTTLE_LOGIN", "20/min"),
        "token": os.environ.get("THROTTLE_TOKEN", "20/min"),
    },
    # Reverse proxies in front of gunicorn: throttles then key on the client's address from
    # X-Forwarded-For instead of the proxy's.
    "NUM_PROXIES": int(os.environ["NUM_PROXIES"]) if os.environ.get("NUM_PROXIES") else None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "rlhf-studio API",
    "DESCRIPTION": "Collect rankings of model outputs and export preference data.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # `<id:...>` routes (annotation/converters.py) are integers to clients.
    "PATH_CONVERTER_OVERRIDES": {"id": int},
}

# Limits on untrusted input.
RATIONALE_MAX_LENGTH = int(os.environ.get("RATIONALE_MAX_LENGTH", "5000"))
# A written demonstration or an edited best answer (characters).
ANSWER_MAX_LENGTH = int(os.environ.get("ANSWER_MAX_LENGTH", "20000"))
BULK_IMPORT_MAX_ITEMS = int(os.environ.get("BULK_IMPORT_MAX_ITEMS", "10000"))
# Corrections (re-submits of a submitted assignment) accepted per assignment; past it, 409.
CORRECTIONS_MAX = int(os.environ.get("CORRECTIONS_MAX", "20"))
# Request bodies: 1 MiB everywhere (checked before anything is parsed, see
# config/middleware.py); the staff bulk-import endpoints take up to IMPORT_MAX_BYTES.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("DATA_UPLOAD_MAX_MEMORY_SIZE", str(1024**2)))
IMPORT_MAX_BYTES = int(os.environ.get("IMPORT_MAX_BYTES", str(50 * 1024**2)))
# Values (objects, arrays, scalars) one import body may hold: bounds its memory once parsed.
IMPORT_MAX_JSON_VALUES = int(os.environ.get("IMPORT_MAX_JSON_VALUES", "1000000"))

# Statistics page and /stats/: a labeler is marked weak on a figure below these (gold accuracy,
# agreement with the consensus of the other labelers' rankings) or, for time, under this median
# number of seconds per task (too fast to have read the answers). See docs/admin.md.
LABELER_THRESHOLDS = {
    "gold_accuracy": float(os.environ.get("LABELER_MIN_GOLD_ACCURACY", "0.7")),
    "agreement_with_consensus": float(os.environ.get("LABELER_MIN_AGREEMENT", "0.6")),
    "median_seconds": float(os.environ.get("LABELER_MIN_MEDIAN_SECONDS", "5")),
}

# Security. Production (DEBUG off) gets HTTPS-only cookies, HSTS and SSL redirect; a reverse
# proxy in front terminates TLS and says so with X-Forwarded-Proto.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    # The training code's notes (a resumed checkpoint, a clamped max_length, the epochs and
    # learning rate picked for the data) are for whoever runs the command.
    "loggers": {"training": {"level": os.environ.get("LOG_LEVEL", "INFO")}},
}
