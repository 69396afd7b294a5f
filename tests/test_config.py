"""load_config: defaults < YAML file < environment < overrides, and errors that name the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ocr_watcher.config import DEFAULT_IGNORE, EX_CONFIG, ConfigError, load_config
from ocr_watcher.config_env import RETENTION_ENV, env_overrides


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own empty working folder, so defaults resolve there."""
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_config(*args, **kwargs)
    return str(excinfo.value)


# -- defaults ------------------------------------------------------------------------------------
def test_defaults_without_a_file(tmp_path):
    # Given no config file and an empty environment
    # When the configuration is loaded
    config = load_config(environ={})
    # Then ./inbox and ./outbox (absolute) and engine auto are used
    assert config.inbox == tmp_path / "inbox"
    assert config.outbox == tmp_path / "outbox"
    assert config.inbox.is_absolute() and config.outbox.is_absolute()
    assert config.engine == "auto"
    assert config.intake.settle_seconds is None
    assert config.intake.ignore == DEFAULT_IGNORE
    assert config.retention.max_job_storage_mb == 10240
    assert config.retention.max_job_count == 1000
    assert config.retention.max_job_age_hours == 168


def test_default_ignore_list_is_a_fresh_copy_each_time():
    a = load_config(environ={})
    a.intake.ignore.append("*.pdf")
    assert "*.pdf" not in load_config(environ={}).intake.ignore


def test_empty_file_means_defaults(tmp_path):
    # Given an empty config file in another folder
    config = load_config(write(tmp_path / "etc" / "c.yaml", ""), environ={})
    # Then the defaults apply; folders the file does not name stay relative to the working folder
    assert config.engine == "auto"
    assert config.inbox == tmp_path / "inbox"


# -- the file ------------------------------------------------------------------------------------
def test_file_values_are_used(tmp_path):
    # Given a YAML file with values in several sections
    path = write(
        tmp_path / "c.yaml",
        """
inbox: /srv/ocr/in
outbox: /srv/ocr/out
engine: tesseract
intake:
  settle_seconds: 3
  ignore: ["*.bak"]
pipeline:
  workers: 4
profiles:
  urgent:
    priority: 10
""",
    )
    # When loaded
    config = load_config(path, environ={})
    # Then they are all there, and untouched keys keep their defaults
    assert config.inbox == Path("/srv/ocr/in")
    assert config.outbox == Path("/srv/ocr/out")
    assert config.engine == "tesseract"
    assert config.intake.settle_seconds == 3.0
    assert config.intake.ignore == ["*.bak"]
    assert config.intake.poll_interval_seconds == 2.0
    assert config.pipeline.workers == 4
    assert config.worker_count == 4
    assert config.profile("urgent").priority == 10
    assert config.profile("nonexistent").priority == 0


def test_relative_folders_are_relative_to_the_config_file(tmp_path):
    # Given a config file in another folder than the working folder, with relative folders
    path = write(tmp_path / "etc" / "ocr" / "c.yaml", "inbox: in\noutbox: ../spool/out\n")
    # When loaded
    config = load_config(path, environ={})
    # Then they are resolved against the file's folder, not the working folder
    assert config.inbox == tmp_path / "etc" / "ocr" / "in"
    assert config.outbox.resolve() == tmp_path / "etc" / "spool" / "out"
    assert config.inbox.is_absolute() and config.outbox.is_absolute()


def test_config_file_path_from_environment(tmp_path):
    path = write(tmp_path / "elsewhere" / "c.yaml", "engine: text\n")
    config = load_config(environ={"OCR_WATCHER_CONFIG": str(path)})
    assert config.engine == "text"


# -- the environment -----------------------------------------------------------------------------
def test_env_top_level_override():
    assert load_config(environ={"OCR_WATCHER_ENGINE": "text"}).engine == "text"


def test_env_nested_override_with_double_underscore():
    config = load_config(environ={"OCR_WATCHER_INTAKE__SETTLE_SECONDS": "5"})
    assert config.intake.settle_seconds == 5.0


def test_env_values_are_yaml_scalars_and_lists():
    config = load_config(
        environ={
            "OCR_WATCHER_INTAKE__USE_INOTIFY": "false",
            "OCR_WATCHER_INTAKE__IGNORE": "[a*, b*]",
            "OCR_WATCHER_PIPELINE__WORK_DIR": "null",
        }
    )
    assert config.intake.use_inotify is False
    assert config.intake.ignore == ["a*", "b*"]
    assert config.pipeline.work_dir is None


def test_retention_names_are_read_as_they_are():
    # Given the retention variables of the service this one replaces
    env = {"MAX_JOB_COUNT": "5", "MAX_JOB_STORAGE_MB": "2.5", "MAX_JOB_AGE_HOURS": "24"}
    # When loaded
    config = load_config(environ=env)
    # Then they set the retention section
    assert config.retention.max_job_count == 5
    assert config.retention.max_job_storage_mb == 2.5
    assert config.retention.max_job_age_hours == 24
    assert set(RETENTION_ENV) == set(env)


def test_unrelated_environment_is_ignored():
    config = load_config(environ={"HOME": "/root", "OCR_WATCHER": "x", "MAX_JOB": "1", "PATH": "/bin"})
    assert config.engine == "auto"


def test_env_overrides_tree():
    assert env_overrides({"OCR_WATCHER_A__B__C": "1", "OCR_WATCHER_CONFIG": "/x", "MAX_JOB_COUNT": "7"}) == {
        "a": {"b": {"c": "1"}},  # scalars stay strings; the model converts them per field
        "retention": {"max_job_count": "7"},
    }


def test_numeric_worker_id_from_environment_is_a_name():
    # Given a per-GPU instance that sets its worker id to the GPU number
    config = load_config(environ={"OCR_WATCHER_WORKER_ID": "0"})
    # Then the worker id is the string "0"
    assert config.worker_id == "0"


# -- precedence ----------------------------------------------------------------------------------
def test_precedence_defaults_file_env_overrides(tmp_path):
    # Given a file, an environment and overrides that each set some of the same keys
    path = write(
        tmp_path / "c.yaml",
        "engine: tesseract\nlog_level: debug\nintake:\n  settle_seconds: 1\n  poll_interval_seconds: 7\n",
    )
    env = {"OCR_WATCHER_ENGINE": "text", "OCR_WATCHER_INTAKE__SETTLE_SECONDS": "2", "MAX_JOB_COUNT": "3"}
    overrides = {"intake": {"settle_seconds": 9}}
    # When loaded
    config = load_config(path, environ=env, overrides=overrides)
    # Then the highest source that sets a key wins, and nested sections are merged, not replaced
    assert config.intake.settle_seconds == 9  # overrides > env > file
    assert config.engine == "text"  # env > file
    assert config.log_level == "debug"  # file > defaults
    assert config.intake.poll_interval_seconds == 7  # file value survives a sibling override
    assert config.retention.max_job_count == 3  # env > defaults
    assert config.intake.rescan_interval_seconds == 60.0  # defaults
    # And overrides beat env on a top-level key too
    assert load_config(path, environ=env, overrides={"engine": "auto"}).engine == "auto"


def test_relative_folder_from_command_line_is_relative_to_the_working_folder(tmp_path):
    # Given a config file elsewhere and a relative --inbox given on the command line
    path = write(tmp_path / "etc" / "c.yaml", "engine: text\n")
    # When loaded
    config = load_config(path, environ={}, overrides={"inbox": "in"})
    # Then the flag is relative to where the command runs
    assert config.inbox == tmp_path / "in"


# -- errors --------------------------------------------------------------------------------------
def test_negative_settle_seconds_names_the_key(tmp_path):
    path = write(tmp_path / "c.yaml", "intake:\n  settle_seconds: -1\n")
    message = config_error(path, environ={})
    assert "intake.settle_seconds" in message
    assert "greater than or equal to 0" in message
    assert str(path) in message


def test_unknown_key_names_the_key(tmp_path):
    path = write(tmp_path / "c.yaml", "intake:\n  setle_seconds: 5\n")
    message = config_error(path, environ={})
    assert "intake.setle_seconds" in message
    assert "unknown key" in message


def test_unknown_key_from_environment_names_the_key():
    message = config_error(environ={"OCR_WATCHER_INTAKE__SETLE_SECONDS": "5"})
    assert "intake.setle_seconds" in message and "unknown key" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("pipeline:\n  workers: many\n", "pipeline.workers"),
        ("engine: gpu-please\n", "engine"),
        ("intake: 5\n", "intake"),
        ("intake:\n  ignore: 7\n", "intake.ignore"),
        ("profiles:\n  urgent:\n    priority: high\n", "profiles.urgent.priority"),
        ("worker_id: a/b\n", "worker_id"),
    ],
)
def test_wrong_type_names_the_key(tmp_path, text, key):
    message = config_error(write(tmp_path / "c.yaml", text), environ={})
    assert f"  {key}:" in message


def test_bad_retention_env_names_the_key():
    message = config_error(environ={"MAX_JOB_COUNT": "-1"})
    assert "retention.max_job_count" in message


def test_every_problem_is_listed(tmp_path):
    path = write(tmp_path / "c.yaml", "engine: nope\nintake:\n  settle_seconds: -2\n")
    message = config_error(path, environ={})
    assert "engine" in message and "intake.settle_seconds" in message


def test_bad_yaml(tmp_path):
    path = write(tmp_path / "c.yaml", "intake:\n  settle_seconds: [1, 2\n")
    message = config_error(path, environ={})
    assert "not valid YAML" in message and str(path) in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_file_that_is_not_a_mapping(tmp_path, text):
    message = config_error(write(tmp_path / "c.yaml", text), environ={})
    assert "must hold a mapping" in message


def test_missing_file(tmp_path):
    message = config_error(tmp_path / "nope.yaml", environ={})
    assert "does not exist" in message and "nope.yaml" in message


# -- overlapping folders -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("inbox", "outbox"),
    [
        ("data", "data"),
        ("data", "data/"),
        ("data", "./data/../data"),
        ("data", "data/out"),
        ("data/in", "data"),
        ("data/a/b/c", "data"),
    ],
)
def test_overlapping_inbox_and_outbox_are_refused(tmp_path, inbox, outbox):
    # Given inbox and outbox that are the same folder or inside each other
    path = write(tmp_path / "c.yaml", f"inbox: {inbox}\noutbox: {outbox}\n")
    # Then the configuration is refused, naming both
    message = config_error(path, environ={})
    assert "must not be the same folder or inside each other" in message


def test_overlap_through_a_symlink_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    message = config_error(environ={}, overrides={"inbox": str(tmp_path / "real"), "outbox": str(tmp_path / "link/x")})
    assert "inside each other" in message


def test_overlap_from_overrides_is_refused(tmp_path):
    message = config_error(environ={}, overrides={"inbox": str(tmp_path / "x"), "outbox": str(tmp_path / "x")})
    assert "inside each other" in message


@pytest.mark.parametrize(("inbox", "outbox"), [("in", "out"), ("data/in", "data/out"), ("inbox", "inbox2")])
def test_sibling_folders_are_fine(tmp_path, inbox, outbox):
    config = load_config(write(tmp_path / "c.yaml", f"inbox: {inbox}\noutbox: {outbox}\n"), environ={})
    assert config.inbox == tmp_path / inbox and config.outbox == tmp_path / outbox


# -- the CLI -------------------------------------------------------------------------------------
def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OCR_WATCHER_") and k not in RETENTION_ENV}


def _check_config(tmp_path: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ocr_watcher.cli", "check-config", "--config", str(config)],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_check_config_bad_file_exits_78_naming_the_key(tmp_path):
    # Given a config file with a negative settle time
    bad = write(tmp_path / "bad.yaml", "intake:\n  settle_seconds: -1\n")
    # When `check-config` runs
    proc = _check_config(tmp_path, bad)
    # Then it exits EX_CONFIG with the key in its error output
    assert proc.returncode == EX_CONFIG == 78, proc.stderr
    assert "intake.settle_seconds" in proc.stderr


def test_cli_check_config_good_file_exits_0(tmp_path):
    good = write(tmp_path / "conf" / "good.yaml", "inbox: in\noutbox: out\nengine: text\n")
    proc = _check_config(tmp_path, good)
    assert proc.returncode == 0, proc.stderr
    assert "configuration OK" in proc.stderr
    assert f"inbox: {tmp_path / 'conf' / 'in'}" in proc.stdout
    assert "engine: text" in proc.stdout


def test_config_example_documents_every_key_with_its_default():
    """config.example.yaml loads, and gives exactly the built-in defaults: every key documented
    there is real and shows the value the daemon uses when it is left out."""
    import yaml

    from ocr_watcher.config import Config

    example = Path(__file__).resolve().parents[1] / "config.example.yaml"
    loaded = load_config(example, environ={})
    defaults = Config()
    as_dict = loaded.model_dump(mode="json")
    expected = defaults.model_dump(mode="json")
    for key in ("inbox", "outbox"):  # relative to the file in the example, to the cwd by default
        as_dict.pop(key)
        expected.pop(key)
    assert as_dict == expected

    def keys(tree, prefix=""):
        for key, value in tree.items():
            yield prefix + key
            if isinstance(value, dict) and key != "profiles":
                yield from keys(value, prefix + key + ".")

    written = set(keys(yaml.safe_load(example.read_text())))
    assert written == set(keys(expected)) | {"inbox", "outbox"}, "every key is in the example"
