"""The guest-side configuration: excluded_paths and etc/sync.params."""
from __future__ import annotations

import dataclasses
import os

import pytest

from osam.sentinel.config import DEFAULT_ETC, ConfigError, SentinelConfig, load_config


@pytest.fixture
def etc(tmp_path):
    (tmp_path / "etc").mkdir()
    return tmp_path


def write_params(etc, text):
    path = etc / "etc" / "sync.params"
    path.write_text(text)
    return str(path)


def write_excluded(etc, data: bytes):
    path = etc / "excluded_paths"
    path.write_bytes(data)
    return str(path)


def test_missing_files_mean_defaults(tmp_path):
    config = load_config(str(tmp_path / "nothing-here"))
    assert config == SentinelConfig(etc_dir=str(tmp_path / "nothing-here"))
    assert (config.max_retry_interval, config.verify_interval, config.quiesce_timeout) == \
        (8, 600, 120)
    assert config.excluded_paths == () and config.pre_quiesce_hooks == ()
    assert config.max_retry_seconds == 8 * 3600
    assert DEFAULT_ETC == "/opt/vmware/hcx/osam"


def test_config_is_frozen(tmp_path):
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_config(str(tmp_path)).verify_interval = 1


def test_sync_params_are_read(etc):
    write_params(etc, """\
# retry for three hours
max_retry_interval = 3

verify_interval=0
quiesce_services = postgresql, nginx
quiesce_services = tomcat9@app
pre_quiesce_hook = psql -c 'CHECKPOINT'
pre_quiesce_hook=/usr/local/bin/flush --all
quiesce_timeout = 30
""")
    config = load_config(str(etc))
    assert config.max_retry_interval == 3
    assert config.verify_interval == 0
    assert config.quiesce_services == ("postgresql", "nginx", "tomcat9@app")
    assert config.pre_quiesce_hooks == ("psql -c 'CHECKPOINT'", "/usr/local/bin/flush --all")
    assert config.quiesce_timeout == 30


@pytest.mark.parametrize("value", ["9", "0", "1.5", "-1", "eight", "", "8h"])
def test_max_retry_interval_out_of_range(etc, value):
    path = write_params(etc, "# comment\n\nmax_retry_interval=%s\n" % value)
    with pytest.raises(ConfigError) as info:
        load_config(str(etc))
    assert str(info.value) == (
        "%s:3: max_retry_interval must be a whole number of hours from 1 to 8, got %r"
        % (path, value))


@pytest.mark.parametrize("value", ["1", "8"])
def test_max_retry_interval_bounds(etc, value):
    write_params(etc, "max_retry_interval=%s\n" % value)
    assert load_config(str(etc)).max_retry_interval == int(value)


@pytest.mark.parametrize("text, line, message", [
    ("verify_interval=10\nspeed=fast\n", 2, "unknown key 'speed'"),
    ("verify_interval\n", 1, "expected key=value"),
    ("verify_interval=-5\n", 1, "verify_interval must be a whole number of seconds"),
    ("quiesce_timeout=0\n", 1, "quiesce_timeout must be a whole number of seconds, at least 1"),
    ("verify_interval=1\n#\nverify_interval=2\n", 3, "verify_interval already set on line 1"),
    ("quiesce_services=ok, bad name\n", 1, "quiesce_services must be a comma-separated"),
    ("pre_quiesce_hook=\n", 1, "pre_quiesce_hook must be a shell command"),
])
def test_sync_params_errors_name_file_and_line(etc, text, line, message):
    path = write_params(etc, text)
    with pytest.raises(ConfigError) as info:
        load_config(str(etc))
    assert str(info.value).startswith("%s:%d: %s" % (path, line, message))


def test_excluded_paths_are_read(etc):
    write_excluded(etc, b"# logs are not worth it\n/var/log\n\n  /tmp/  \n/srv//cache/./x\n"
                        b"/data/caf\xe9\r\n/var/log\n")
    config = load_config(str(etc))
    assert config.excluded_paths == (b"/data/caf\xe9", b"/srv/cache/x", b"/tmp", b"/var/log")


def test_is_excluded_matches_the_path_and_everything_below(etc):
    write_excluded(etc, b"/var/log\n/data/caf\xe9\n")
    config = load_config(str(etc))
    assert config.is_excluded(b"var/log")
    assert config.is_excluded(b"var/log/syslog")
    assert config.is_excluded(b"var/log/apt/history.log")
    assert config.is_excluded(b"data/caf\xe9/x")
    assert not config.is_excluded(b"var/logs")
    assert not config.is_excluded(b"var")
    assert not config.is_excluded(b"")


@pytest.mark.parametrize("line, message", [
    (b"var/log", "excluded path must be absolute, got 'var/log'"),
    (b"/var/\0log", "excluded path contains a NUL byte"),
    (b"/", "excluding / would exclude everything"),
    (b"/..", "excluding / would exclude everything"),
])
def test_excluded_paths_errors_name_file_and_line(etc, line, message):
    path = write_excluded(etc, b"/ok\n# fine\n" + line + b"\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(etc))
    assert str(info.value) == "%s:3: %s" % (path, message)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_default_etc_is_used_without_argument(monkeypatch):
    if os.path.exists(DEFAULT_ETC):
        pytest.skip("%s exists on this machine" % DEFAULT_ETC)
    assert load_config() == SentinelConfig()


def test_final_verify_is_yes_or_no(tmp_path):
    (tmp_path / "etc").mkdir()
    params = tmp_path / "etc" / "sync.params"
    params.write_text("final_verify = yes\n")
    assert load_config(str(tmp_path)).final_verify is True
    params.write_text("final_verify=maybe\n")
    with pytest.raises(ConfigError, match=r"sync.params:1: final_verify must be yes or no"):
        load_config(str(tmp_path))
