"""Classroom settings: read from one file at start, checked, and the folders a student
may reach kept inside their roots."""

from __future__ import annotations

import pytest

from langneurons.classroom import ClassroomConfig, load_classroom
from langneurons.config import ConfigError


def test_every_setting_has_a_default_and_the_file_overrides_some(tmp_path):
    path = tmp_path / "classroom.toml"
    path.write_text('models = ["gemma-3-270m", "tiny"]\nmax_prompt_chars = 200\nport = 9000\n')
    config = load_classroom(path)
    assert config.models == ("gemma-3-270m", "tiny") and config.max_prompt_chars == 200
    assert config.max_new_tokens == ClassroomConfig().max_new_tokens
    assert config.allows_model("tiny") and not config.allows_model("./elsewhere")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_prompt_chars = 0", "max_prompt_chars must be at least 1"),
        ("models = []", "name at least one model"),
        ('models = "gemma"', "models must be a list of strings"),
        ("max_new_tokens = 'many'", "max_new_tokens must be int"),
        ("shell = true", "unknown setting"),
        ("max_new_tokens = ", "not valid TOML"),
    ],
)
def test_a_bad_file_is_one_clear_message(tmp_path, text, message):
    path = tmp_path / "classroom.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_classroom(path)
    with pytest.raises(ConfigError, match="Cannot read the classroom file"):
        load_classroom(tmp_path / "missing.toml")


def test_folders_stay_inside_their_roots(tmp_path):
    root = tmp_path / "runs"
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "meta.json").write_text("{}")
    (root / "other").mkdir()
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "meta.json").write_text("{}")  # a run outside the roots, behind a link
    (root / "link").symlink_to(secret)
    config = ClassroomConfig(run_roots=(str(root),))
    assert config.resolve_under(config.run_roots, "demo") == (root / "demo").resolve()
    assert config.resolve_under(config.run_roots, str(root / "demo")) == (root / "demo").resolve()
    for escape in ("../secret", str(secret), "/etc", "link", "demo/../../secret", ""):
        assert config.resolve_under(config.run_roots, escape) is None, escape
    assert config.folders_under(config.run_roots, "meta.json") == [str((root / "demo").resolve())]


def _toml_options(text: str) -> dict[str, str]:
    import tomllib

    options = {}
    for section, values in tomllib.loads(text).items():
        for key, value in values.items():
            options[f"{section}.{key}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    return options


def test_the_dashboard_command_and_the_repository_config_agree():
    from pathlib import Path

    from langneurons.cli.dashboard import STREAMLIT_OPTIONS

    text = (Path(__file__).parents[1] / ".streamlit" / "config.toml").read_text()
    assert _toml_options(text) == STREAMLIT_OPTIONS


def _dashboard_args(*argv: str):
    from langneurons.cli import build_parser

    return build_parser().parse_args(["dashboard", *argv])


def test_the_dashboard_listens_on_this_machine_unless_told_otherwise(tmp_path):
    from langneurons.cli.dashboard import OPEN_RUN, app_path, command

    argv, env = command(_dashboard_args())
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert argv[argv.index("--server.port") + 1] == "8501"
    assert argv[argv.index("run") + 1] == str(app_path()) and app_path().is_file()
    assert "LANGNEURONS_CLASSROOM" not in env and OPEN_RUN not in env

    config = tmp_path / "classroom.toml"
    config.write_text("port = 9100\nmax_upload_mb = 2.5\n")
    argv, env = command(_dashboard_args("--classroom", str(config)))
    assert argv[argv.index("--server.address") + 1] == "0.0.0.0"
    assert argv[argv.index("--server.port") + 1] == "9100"
    assert argv[argv.index("--client.showErrorDetails") + 1] == "none"
    assert argv[argv.index("--server.maxUploadSize") + 1] == "2"
    assert env["LANGNEURONS_CLASSROOM"] == str(config.resolve())
    argv, _ = command(_dashboard_args("--classroom", str(config), "--address", "10.0.0.5"))
    assert argv[argv.index("--server.address") + 1] == "10.0.0.5"


def test_a_bad_classroom_file_or_run_stops_the_dashboard_before_it_starts(tmp_path, capsys):
    from langneurons.cli import main

    config = tmp_path / "classroom.toml"
    config.write_text("max_new_tokens = 0\n")
    assert main(["dashboard", "--classroom", str(config)]) != 0
    assert "max_new_tokens must be at least 1" in capsys.readouterr().err
    assert main(["dashboard", "--run", str(tmp_path / "nowhere")]) != 0
    assert "nowhere" in capsys.readouterr().err
