"""One made-up value of each credential format ``redact=True`` must catch, in its real shape.

Bodies are drawn from a seeded generator: stable from run to run, but no real key's. ``SECRETS``
maps a format to its value; ``needles()`` gives every string that must appear nowhere (each
value, a fragment of its middle, its JSON-escaped form), so a half-redacted value is caught too.
"""

from __future__ import annotations

import base64
import json
import random
import string

_rng = random.Random(20260417)
_UPPER_DIGITS = string.ascii_uppercase + string.digits
_ALNUM = string.ascii_letters + string.digits
_B64 = _ALNUM + "+/"


def _chars(alphabet: str, n: int) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


AWS_ACCESS_KEY_ID = "AKIA" + _chars(_UPPER_DIGITS, 16)
AWS_SECRET_ACCESS_KEY = _chars(_ALNUM, 12) + "/" + _chars(_B64, 14) + "+" + _chars(_ALNUM, 12)  # 40
GITHUB_TOKEN = "ghp_" + _chars(_ALNUM, 36)
GITHUB_PAT = "github_pat_" + _chars(_ALNUM, 22) + "_" + _chars(_ALNUM, 59)
GITLAB_TOKEN = "glpat-" + _chars(_ALNUM + "_-", 20)
SLACK_TOKEN = f"xoxb-{_chars(string.digits, 12)}-{_chars(string.digits, 13)}-{_chars(_ALNUM, 24)}"
SLACK_WEBHOOK_PATH = f"T{_chars(_UPPER_DIGITS, 8)}/B{_chars(_UPPER_DIGITS, 8)}/{_chars(_ALNUM, 24)}"
GOOGLE_API_KEY = "AIza" + _chars(_ALNUM + "_-", 35)
STRIPE_KEY = "sk_live_" + _chars(_ALNUM, 24)
STRIPE_RESTRICTED_KEY = "rk_live_" + _chars(_ALNUM, 99)  # newer keys are longer
OPENAI_KEY = "sk-proj-" + _chars(_ALNUM + "_-", 48)
ANTHROPIC_KEY = "sk-ant-api03-" + _chars(_ALNUM + "_-", 93)
HUGGINGFACE_TOKEN = "hf_" + _chars(string.ascii_letters, 34)
SENDGRID_KEY = f"SG.{_chars(_ALNUM + '_-', 22)}.{_chars(_ALNUM + '_-', 43)}"
NPM_TOKEN = "npm_" + _chars(_ALNUM, 36)
JWT = ".".join(
    (
        _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()),
        _b64url(json.dumps({"sub": "user-" + _chars(string.digits, 6), "iat": 1760000000}).encode()),
        _b64url(bytes(_rng.randrange(256) for _ in range(32))),
    )
)
PEM_BODY = [_chars(_B64, 64) for _ in range(6)] + [_chars(_B64, 20) + "=="]
PEM_KEY = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(PEM_BODY) + "\n-----END RSA PRIVATE KEY-----"
OPENSSH_BODY = [_chars(_B64, 70) for _ in range(3)]
OPENSSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(OPENSSH_BODY) + "\n-----END OPENSSH PRIVATE KEY-----"
)
AZURE_ACCOUNT_KEY = _chars(_B64, 86) + "=="
AZURE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=https;AccountName=acmedocs;"
    f"AccountKey={AZURE_ACCOUNT_KEY};EndpointSuffix=core.windows.net"
)
DB_PASSWORD = "Tr0ub4dor&" + _chars(_ALNUM, 10)
DATABASE_URL = f"postgresql://orders_app:{DB_PASSWORD}@db.internal.example:5432/orders"
# Named only: nothing in the value says it is a secret, its name does.
SERVICE_TOKEN = _chars(_ALNUM, 32)  # PAYMENTS_SERVICE_TOKEN=…
ENV_PASSWORD = "hunter2-" + _chars(_ALNUM, 8)  # DB_PASSWORD=…
CLIENT_SECRET = _chars(_ALNUM + "-_", 30)  # "client_secret": "…"
HEADER_API_KEY = _chars(string.hexdigits.lower(), 32)  # api-key: …
DOTTED_PASSWORD = _chars(_ALNUM, 14)  # spring.datasource.password=…
CAMEL_API_KEY = _chars(_ALNUM, 26)  # {"stripeApiKey": …} (a metadata key)

# The secret itself of each format (not the URL or connection string around it).
SECRETS: dict[str, str] = {
    "aws_access_key_id": AWS_ACCESS_KEY_ID,
    "aws_secret_access_key": AWS_SECRET_ACCESS_KEY,
    "github_token": GITHUB_TOKEN,
    "github_fine_grained_pat": GITHUB_PAT,
    "gitlab_token": GITLAB_TOKEN,
    "slack_token": SLACK_TOKEN,
    "slack_webhook": SLACK_WEBHOOK_PATH,
    "google_api_key": GOOGLE_API_KEY,
    "stripe_key": STRIPE_KEY,
    "stripe_restricted_key": STRIPE_RESTRICTED_KEY,
    "openai_key": OPENAI_KEY,
    "anthropic_key": ANTHROPIC_KEY,
    "huggingface_token": HUGGINGFACE_TOKEN,
    "sendgrid_key": SENDGRID_KEY,
    "npm_token": NPM_TOKEN,
    "jwt": JWT,
    "pem_private_key": PEM_KEY,
    "openssh_private_key": OPENSSH_KEY,
    "azure_account_key": AZURE_ACCOUNT_KEY,
    "database_url_password": DB_PASSWORD,
    "named_service_token": SERVICE_TOKEN,
    "named_env_password": ENV_PASSWORD,
    "named_client_secret": CLIENT_SECRET,
    "named_header_api_key": HEADER_API_KEY,
    "named_dotted_password": DOTTED_PASSWORD,
    "named_camel_api_key": CAMEL_API_KEY,
}


def env_file() -> str:
    """A leaked ``.env`` / config file: every format by its usual name."""
    return "\n".join(
        [
            f"AWS_ACCESS_KEY_ID={AWS_ACCESS_KEY_ID}",
            f"AWS_SECRET_ACCESS_KEY={AWS_SECRET_ACCESS_KEY}",
            f"GITHUB_TOKEN={GITHUB_TOKEN}",
            f"GITLAB_TOKEN={GITLAB_TOKEN}",
            f"SLACK_BOT_TOKEN={SLACK_TOKEN}",
            f"SLACK_WEBHOOK_URL=https://hooks.slack.com/services/{SLACK_WEBHOOK_PATH}",
            f"STRIPE_SECRET_KEY={STRIPE_KEY}",
            f"OPENAI_API_KEY={OPENAI_KEY}",
            f"HF_TOKEN={HUGGINGFACE_TOKEN}",
            f"PAYMENTS_SERVICE_TOKEN={SERVICE_TOKEN}",
            f"DB_PASSWORD={ENV_PASSWORD}",
            f"DATABASE_URL={DATABASE_URL}",
            f"AZURE_STORAGE_CONNECTION_STRING={AZURE_CONNECTION_STRING}",
            f"spring.datasource.password={DOTTED_PASSWORD}",
            f'aws_secret_access_key = "{AWS_SECRET_ACCESS_KEY}"',
            f'{{"client_secret": "{CLIENT_SECRET}", "api-key": "{HEADER_API_KEY}"}}',
            PEM_KEY,
        ]
    )


def prose() -> str:
    """Keys pasted into a chat message, with no name near most of them."""
    return (
        f"Here is my key {ANTHROPIC_KEY} and the old one {OPENAI_KEY}; the deploy uses {GITHUB_PAT} and "
        f"Google {GOOGLE_API_KEY}. Mail goes through {SENDGRID_KEY}, packages through {NPM_TOKEN}. "
        f"My session: {JWT}. Restricted key {STRIPE_RESTRICTED_KEY}, AWS id {AWS_ACCESS_KEY_ID}.\n"
        f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET_ACCESS_KEY}\napi-key: {HEADER_API_KEY}\n"
        f"The database is {DATABASE_URL}.\n{OPENSSH_KEY}"
    )


def needles() -> list[str]:
    """Everything that must appear nowhere: values, their middles, their JSON-escaped forms, and
    each line of the private key blocks."""
    found: set[str] = set()
    for value in [*SECRETS.values(), *PEM_BODY, *OPENSSH_BODY]:
        found.add(value)
        found.add(json.dumps(value)[1:-1])
        if len(value) >= 24:
            middle = len(value) // 2
            found.add(value[middle - 8 : middle + 8])
    return sorted(found)
