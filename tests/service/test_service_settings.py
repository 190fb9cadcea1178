"""Settings refuse unsafe or broken configurations."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service import settings as settings_module
from service.settings import Settings
from tests.support.service import ADMIN_KEY, CLIENT_KEY


def test_refuses_to_start_without_admin_key(model_path: Path) -> None:
    with pytest.raises(ValidationError, match="LRFR_ADMIN_KEYS"):
        Settings(model_path=model_path)


def test_dev_mode_runs_without_keys(model_path: Path) -> None:
    settings = Settings(model_path=model_path, dev_mode=True)
    assert settings.auth_disabled


def test_dev_mode_with_keys_still_checks_them(model_path: Path) -> None:
    settings = Settings(model_path=model_path, dev_mode=True, admin_keys=[ADMIN_KEY])
    assert not settings.auth_disabled


def test_keys_are_comma_separated_in_the_environment(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LRFR_MODEL_PATH", str(model_path))
    monkeypatch.setenv("LRFR_ADMIN_KEYS", f" {ADMIN_KEY} ,{ADMIN_KEY}x")
    monkeypatch.setenv("LRFR_CLIENT_KEYS", CLIENT_KEY)
    monkeypatch.setenv("LRFR_MAX_UPLOAD_BYTES", "1234")
    settings = Settings()
    assert settings.admin_keys == [ADMIN_KEY, ADMIN_KEY + "x"]
    assert settings.client_keys == [CLIENT_KEY]
    assert settings.max_upload_bytes == 1234


def test_short_and_shared_keys_are_refused(model_path: Path) -> None:
    with pytest.raises(ValidationError, match="at least 16"):
        Settings(model_path=model_path, admin_keys=["short"])
    with pytest.raises(ValidationError, match="both an admin and a client"):
        Settings(model_path=model_path, admin_keys=[ADMIN_KEY], client_keys=[ADMIN_KEY])


def test_model_path_required_without_a_bundled_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_module, "BUNDLED_MODEL_PATH", tmp_path / "absent.onnx")
    with pytest.raises(ValidationError, match="LRFR_MODEL_PATH is not set"):
        Settings(admin_keys=[ADMIN_KEY])


def test_bundled_model_is_the_default(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "BUNDLED_MODEL_PATH", model_path)
    assert Settings(admin_keys=[ADMIN_KEY]).model_path == model_path


def test_database_defaults_to_sqlite_in_the_data_dir(model_path: Path, tmp_path: Path) -> None:
    settings = Settings(model_path=model_path, dev_mode=True, data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/lrfr.sqlite3"
    assert settings.index_dir == tmp_path / "index"
