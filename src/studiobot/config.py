"""Settings, read once at start (environment variables and ``.env``) and passed down explicitly.

Every setting is documented in ``.env.example`` with its default. Names are ``STUDIOBOT_<FIELD>``;
the few that platforms and vendors conventionally name themselves (``DISCORD_TOKEN``,
``TELEGRAM_TOKEN``, ``TELEGRAM_WEBHOOK_URL``, ``OPENAI_API_KEY``, ``REPLICATE_API_TOKEN``,
``STABILITY_API_KEY``, ``KIE_API_KEY``, ``HF_TOKEN``) are accepted under those names too.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _alias(name: str, *extra: str) -> AliasChoices:
    return AliasChoices(f"STUDIOBOT_{name.upper()}", *extra)


_PRODUCT_ID = r"^[a-z0-9][a-z0-9_-]{0,39}$"
#: Every provider studiobot has an adapter for, in the order they are offered.
PROVIDERS = ("offline", "openai", "replicate", "stability", "kie", "huggingface")


class CreditPack(BaseModel):
    """A pack of credits for sale: ``price`` is in the currency's smallest unit (cents for USD).

    Stripe: ``unit_amount`` is an integer in minor units and ``currency`` a lowercase ISO code.
    """

    id: str = Field(pattern=_PRODUCT_ID)
    credits: int = Field(ge=1)
    price: int = Field(ge=50, description="Minor units; Stripe's minimum charge is about 0.50.")
    currency: str = Field("usd", pattern=r"^[a-z]{3}$")
    label: str = Field(min_length=1, max_length=100)


class PassPlan(BaseModel):
    """A time-boxed pass: ``credits_per_window`` credits every ``window_s`` seconds for ``duration_s``.

    For example 15 images an hour for 24 hours: ``credits_per_window=15, window_s=3600,
    duration_s=86400``. Credits not used in a window do not carry over.
    """

    id: str = Field(pattern=_PRODUCT_ID)
    credits_per_window: int = Field(ge=1)
    window_s: int = Field(ge=60)
    duration_s: int = Field(ge=60)
    price: int = Field(ge=50)
    currency: str = Field("usd", pattern=r"^[a-z]{3}$")
    label: str = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _window_fits(self) -> PassPlan:
        if self.window_s > self.duration_s:
            raise ValueError("a pass's window_s cannot be longer than its duration_s")
        return self


DEFAULT_PACKS = (
    CreditPack(id="small", credits=100, price=500, label="100 credits"),
    CreditPack(id="large", credits=500, price=2000, label="500 credits"),
)
DEFAULT_PASSES = (
    PassPlan(id="day", credits_per_window=15, window_s=3600, duration_s=86400, price=300,
             label="Day pass"),
)


class Settings(BaseSettings):
    """All of studiobot's configuration. Construct once in ``cli``/``app`` and pass it down.

    Raises:
        pydantic.ValidationError: When a variable is malformed; the message names the variable.
    """

    model_config = SettingsConfigDict(
        env_prefix="STUDIOBOT_",
        env_file=".env",
        env_ignore_empty=True,  # `OPENAI_API_KEY=` copied from .env.example means "not set"
        extra="ignore",
        populate_by_name=True,
    )

    # Storage
    data_dir: Path = Field(Path("data"), description="Folder for the SQLite file and media.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite+aiosqlite:///<data_dir>/studiobot.db."
    )
    sqlite_synchronous: str = Field(
        "FULL", description="SQLite synchronous pragma. FULL makes every ledger commit durable."
    )

    # Credits and billing
    welcome_credits: int = Field(50, ge=0, description="Credits granted to every new user.")
    credit_packs: tuple[CreditPack, ...] = Field(
        DEFAULT_PACKS,
        description='Credit packs for sale, JSON list of {"id", "credits", "price" (minor units, e.g. '
        'cents), "currency", "label"}.',
    )
    passes: tuple[PassPlan, ...] = Field(
        DEFAULT_PASSES,
        description='Passes for sale, JSON list of {"id", "credits_per_window", "window_s", '
        '"duration_s", "price", "currency", "label"}.',
    )
    stripe_secret_key: SecretStr | None = Field(
        None,
        validation_alias=_alias("stripe_secret_key", "STRIPE_SECRET_KEY"),
        description="Stripe secret (or restricted) key; when set, /buy sells the packs and passes.",
    )
    stripe_webhook_secret: SecretStr | None = Field(
        None,
        validation_alias=_alias("stripe_webhook_secret", "STRIPE_WEBHOOK_SECRET"),
        description="Signing secret (whsec_...) of the webhook endpoint <public_url>/stripe/webhook.",
    )
    stripe_api_base: str = Field("https://api.stripe.com", description="Stripe API root.")
    public_url: str | None = Field(
        None,
        validation_alias=_alias("public_url"),
        description="Public base URL of the web server (checkout landing pages, webhooks); "
        "default http://<web_host>:<web_port>.",
    )
    checkout_expires_s: int = Field(
        3600, ge=1800, le=86400, description="How long a checkout link stays valid (Stripe: 30 min to 24 h)."
    )
    clawback_policy: Literal["debt", "absorb"] = Field(
        "debt",
        description="When a refund or dispute takes back credits already spent: debt (owed, repaid "
        "from the next credits) or absorb (take what is there, record the rest as written off).",
    )
    reconcile_interval_s: float = Field(
        600.0, gt=0, description="How often recent paid Checkout Sessions are checked for missed webhooks."
    )
    reconcile_window_s: float = Field(
        3 * 86400.0, gt=0, description="How far back reconciliation looks (Stripe retries for 3 days)."
    )

    # Commands and limits
    prompt_max_chars: int = Field(1000, ge=10, le=32000, description="Longest prompt accepted, in characters.")
    default_provider: str = Field("offline", description="Provider used when /imagine names none.")
    default_count: int = Field(1, ge=1, le=4, description="Images per /imagine when --count is not given.")
    max_active_jobs_per_user: int = Field(4, ge=1, description="Queued plus running jobs per user.")
    max_jobs_per_hour: int = Field(120, ge=1, description="Jobs a user may start in one hour.")
    gallery_page_size: int = Field(9, ge=1, le=9, description="Images per /gallery page (one contact sheet).")
    max_active_jobs_per_community: int = Field(
        20, ge=1, description="Queued plus running jobs per server or group (admins may lower it)."
    )
    nsfw_policy: Literal["block", "spoiler", "age_restricted"] = Field(
        "spoiler",
        description="What a community does with images a provider flags as NSFW until its admins choose: "
        "block (withhold), spoiler (hidden behind a click) or age_restricted (only in age-restricted channels).",
    )
    share_by_default: bool = Field(
        True, description="Images made in a server or group go to its community gallery unless its admins turn it off."
    )
    web_gallery: bool = Field(
        False, description="Serve public images on the web server (<public_url>/gallery); starts the web server."
    )

    # Scheduler
    worker_concurrency: int = Field(8, ge=1, le=1000, description="Submissions one process runs at once.")
    worker_interval_s: float = Field(0.5, gt=0, description="How often the queue is checked (new jobs also wake it).")
    poll_interval_s: float = Field(0.5, gt=0, description="How often due asynchronous jobs are looked at.")
    poll_backoff_max_s: float = Field(10.0, gt=0, description="Longest wait between two polls of a job.")
    poll_concurrency: int = Field(8, ge=1, description="Concurrent polls per provider.")
    lease_s: float = Field(120.0, gt=0, description="How long a claimed job stays ours without renewal.")
    job_deadline_s: float = Field(900.0, gt=0, description="A job not finished by then fails and is refunded.")
    max_attempts: int = Field(4, ge=1, description="Submissions tried before a retryable failure is final.")
    retry_backoff_max_s: float = Field(60.0, gt=0, description="Longest wait between two submissions.")
    delivery_attempts: int = Field(
        8, ge=1, description="Times a finished job's message is sent before giving up (the platform keeps refusing)."
    )
    delivery_backoff_s: float = Field(
        15.0, gt=0, description="Wait before re-sending a refused message; doubles each time, at most an hour."
    )
    download_max_bytes: int = Field(30 * 2**20, ge=1024, description="Largest result file accepted, in bytes.")
    download_timeout_s: float = Field(60.0, gt=0, description="Time allowed to download one result.")
    max_image_pixels: int = Field(
        4096 * 4096, ge=1, description="Largest result image (width x height); checked before decoding."
    )
    download_allow_networks: tuple[str, ...] = Field(
        (),
        description="Networks result downloads may reach although not public (loopback, private, "
        'link-local), JSON list of CIDRs, e.g. ["10.0.0.0/8"] for a self-hosted provider. Default none.',
    )

    # Providers
    offline_delay_s: float = Field(
        0.0, ge=0, description="Above 0, the offline provider acts asynchronously for that long."
    )
    offline_size: int = Field(512, ge=64, le=2048, description="Long side of offline images, in pixels.")
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=_alias("openai_api_key", "OPENAI_API_KEY"),
        description="The operator's OpenAI key; when set, the openai provider is offered.",
    )
    openai_base_url: str = Field("https://api.openai.com/v1", description="OpenAI API root.")
    openai_timeout_s: float = Field(120.0, gt=0, description="Generations take tens of seconds.")
    replicate_api_token: SecretStr | None = Field(
        None,
        validation_alias=_alias("replicate_api_token", "REPLICATE_API_TOKEN"),
        description="The operator's Replicate token; when set, the replicate provider is offered.",
    )
    replicate_base_url: str = Field("https://api.replicate.com/v1", description="Replicate API root.")
    replicate_timeout_s: float = Field(30.0, gt=0, description="Time allowed per Replicate request.")
    replicate_models: tuple[str, ...] = Field(
        ("black-forest-labs/flux-schnell",),
        description="Replicate models offered (owner/name or owner/name:version), JSON list.",
    )
    stability_api_key: SecretStr | None = Field(
        None,
        validation_alias=_alias("stability_api_key", "STABILITY_API_KEY"),
        description="The operator's Stability AI key; without it, users can still bring their own.",
    )
    stability_base_url: str = Field("https://api.stability.ai", description="Stability AI API root.")
    kie_api_key: SecretStr | None = Field(
        None,
        validation_alias=_alias("kie_api_key", "KIE_API_KEY"),
        description="The operator's KIE.ai key; without it, users can still bring their own.",
    )
    kie_base_url: str = Field("https://api.kie.ai", description="KIE.ai API root.")
    huggingface_token: SecretStr | None = Field(
        None,
        validation_alias=_alias("huggingface_token", "HF_TOKEN"),
        description="The operator's Hugging Face token; without it, users can still bring their own.",
    )
    huggingface_base_url: str = Field(
        "https://router.huggingface.co/hf-inference", description="Hugging Face Inference Providers root."
    )
    huggingface_hub_url: str = Field("https://huggingface.co", description="Hugging Face Hub (token checks).")
    huggingface_models: tuple[str, ...] = Field(
        ("black-forest-labs/FLUX.1-schnell", "stabilityai/stable-diffusion-xl-base-1.0"),
        description="Hugging Face text-to-image models offered, JSON list.",
    )
    prices: dict[str, int] = Field(
        default_factory=dict,
        description='Credits per image by provider or provider:model, e.g. {"openai": 5}.',
    )
    providers: tuple[str, ...] = Field(
        PROVIDERS,
        description="Providers offered, JSON list. A provider without a platform key runs only on "
        "users' own keys (/keys add).",
    )
    fallbacks: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description='Where a platform-paid job goes when its provider keeps failing (5xx, rate '
        'limits), e.g. {"replicate": ["stability", "openai"]}. Never used for users\' own keys.',
    )
    master_keys: SecretStr | None = Field(
        None,
        description="Master keys for personal API keys, comma-separated, newest first (Fernet keys; "
        "make one with `studiobot keys new-master-key`). Prefer master_key_file.",
    )
    master_key_file: Path | None = Field(
        None,
        description="File of master keys, one per line, newest first (mode 0600); default "
        "<data_dir>/master.key, generated on SQLite when missing.",
    )

    # Platforms
    discord_token: SecretStr | None = Field(
        None, validation_alias=_alias("discord_token", "DISCORD_TOKEN"), description="Discord bot token."
    )
    discord_api_base: str = Field(
        "https://discord.com/api/v10",
        description="Discord REST root (change only for a REST proxy; the gateway URL comes from it).",
    )
    discord_shard_count: int | None = Field(
        None, ge=1, description="Total Discord shards across all processes; unset lets Discord choose."
    )
    discord_shard_ids: tuple[int, ...] | None = Field(
        None, description="Shards this process runs, JSON list (needs discord_shard_count), e.g. [0, 1]."
    )
    telegram_token: SecretStr | None = Field(
        None, validation_alias=_alias("telegram_token", "TELEGRAM_TOKEN"), description="Telegram bot token."
    )
    telegram_api_base: str = Field(
        "https://api.telegram.org/bot",
        description="Bot API root ending in /bot (change only for a local Bot API server).",
    )
    telegram_webhook_url: str | None = Field(
        None,
        validation_alias=_alias("telegram_webhook_url", "TELEGRAM_WEBHOOK_URL"),
        description="Public HTTPS URL for Telegram to post updates to (webhook mode); unset polls. "
        "The web server serves its path.",
    )
    telegram_webhook_secret: SecretStr | None = Field(
        None, description="Secret token Telegram sends with webhook calls; unset derives one from the token."
    )
    telegram_admin_cache_s: float = Field(
        300.0, gt=0, description="How long a Telegram group's admin list is trusted, in seconds."
    )
    web_host: str = Field("127.0.0.1", description="Interface the web server listens on (0.0.0.0 for all).")
    web_port: int = Field(8080, ge=0, le=65535, description="Port of the web server (webhooks, health).")
    web_header_timeout_s: float = Field(
        10.0, gt=0, description="Time a client has to send a request's line and headers, in seconds."
    )
    web_body_timeout_s: float = Field(30.0, gt=0, description="Time a client has to send a request's body, in seconds.")
    web_max_connections: int = Field(512, ge=1, description="Open connections the web server accepts at once.")
    operators: tuple[str, ...] = Field(
        (), description='Operators as platform:user_id, e.g. ["shell:alice", "discord:1234"].'
    )

    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR; logs go to stderr.")

    @model_validator(mode="after")
    def _shards_fit(self) -> Settings:
        if self.discord_shard_ids is not None:
            if self.discord_shard_count is None:
                raise ValueError("discord_shard_ids needs discord_shard_count")
            bad = [i for i in self.discord_shard_ids if not 0 <= i < self.discord_shard_count]
            if bad:
                raise ValueError(f"discord_shard_ids {bad} are outside 0..{self.discord_shard_count - 1}")
        return self

    @model_validator(mode="after")
    def _products_unique(self) -> Settings:
        ids = [p.id for p in self.credit_packs] + [p.id for p in self.passes]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"credit_packs and passes must have distinct ids; repeated: {twice}")
        return self

    @model_validator(mode="after")
    def _providers_known(self) -> Settings:
        unknown = sorted(set(self.providers) - set(PROVIDERS))
        if unknown:
            raise ValueError(f"providers: unknown {unknown}; choose from {list(PROVIDERS)}")
        if self.default_provider not in self.providers:
            raise ValueError(f"default_provider {self.default_provider!r} is not in providers")
        named = {n for name, chain in self.fallbacks.items() for n in (name, *chain)}
        if named - set(self.providers):
            raise ValueError(f"fallbacks name providers not offered: {sorted(named - set(self.providers))}")
        return self

    @field_validator("download_allow_networks")
    @classmethod
    def _networks_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a network; write it as a CIDR like 10.0.0.0/8") from None
        return value

    @field_validator("telegram_webhook_url")
    @classmethod
    def _webhook_url_has_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be a full URL, e.g. https://bot.example.com/telegram/webhook")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_is_a_base(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be a full URL, e.g. https://studio.example.com")
        return value.rstrip("/") if value else value

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)")
        return value

    @field_validator("sqlite_synchronous")
    @classmethod
    def _known_synchronous(cls, value: str) -> str:
        value = value.upper()
        if value not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError("must be OFF, NORMAL, FULL or EXTRA")
        return value

    @property
    def resolved_database_url(self) -> str:
        """The database URL in use: the configured one, else a SQLite file in ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'studiobot.db').resolve()}"

    @property
    def base_url(self) -> str:
        """Where the web server is reached from outside: ``public_url``, else its own address."""
        return self.public_url or f"http://{self.web_host}:{self.web_port}"

    @property
    def resolved_master_key_file(self) -> Path:
        """The master key file in use: the configured one, else ``<data_dir>/master.key``."""
        return self.master_key_file or self.data_dir / "master.key"

    @property
    def media_dir(self) -> Path:
        """Folder of the content-addressed image store."""
        return self.data_dir / "media"
