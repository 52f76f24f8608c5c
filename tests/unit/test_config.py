"""Settings: defaults, aliases, empty values and the documented example file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from scripts.env_example import render
from studiobot.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_documents_every_setting_with_its_default() -> None:
    assert (ROOT / ".env.example").read_text() == render(), "run: python scripts/env_example.py > .env.example"
    assert all(field.description for field in Settings.model_fields.values())


def test_conventional_names_and_empty_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("REPLICATE_API_TOKEN", "")  # copied from .env.example unchanged: not set
    settings = Settings(_env_file=None)
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-from-env"
    assert "sk-from-env" not in repr(settings)
    assert settings.replicate_api_token is None


def test_default_database_is_a_sqlite_file_in_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'studiobot.db'}"


def test_malformed_values_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIOBOT_WELCOME_CREDITS", "lots")
    with pytest.raises(ValidationError, match="welcome_credits"):
        Settings(_env_file=None)
