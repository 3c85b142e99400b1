"""Config and input errors a user can act on: one line, the user's own names, before any model loads."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from repro.config import ConfigError
from repro.run import check_optional_groups
from tests.conftest import compose_run

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("override,valid", [("env=offlin", "offline"), ("experiment=neuronal/pp", "neuronal/ppl"),
                                            ("logger=wandbb", "wandb"), ("env=offline,ofline", "offline")])
def test_a_typo_in_an_optional_group_names_the_choices(override, valid):
    with pytest.raises(ConfigError, match=valid):
        check_optional_groups([override])
    check_optional_groups(["env=offline", "experiment=neuronal/ppl", "logger=null", "model=whatever"])


def test_the_cli_exits_2_on_an_optional_group_typo():
    done = subprocess.run([sys.executable, "-m", "repro.cli", "run", "env=offlin", "model=tiny-llama"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "`env` = 'offlin'" in done.stderr and "offline" in done.stderr


def test_a_wrong_type_is_one_short_line():
    with pytest.raises(ConfigError) as e:
        compose_run("sparsity=abc")
    assert str(e.value).splitlines() == ["Invalid configuration: `sparsity` = 'abc'. Expected a number."]


def test_status_of_a_missing_folder_is_one_line(tmp_path):
    from repro.runner.status import status_main

    with pytest.raises(SystemExit) as e:
        status_main([str(tmp_path / "nope")])
    assert "no such sweep directory" in str(e.value) and "\n" not in str(e.value)


def _status_error(argv) -> str:
    from repro.runner.status import status_main

    with pytest.raises(SystemExit) as e:
        status_main(argv)
    message = str(e.value.code)
    assert "\n" not in message and "Traceback" not in message, message
    return message


def test_status_on_a_full_disk_is_one_line(monkeypatch):
    """The grid's manifest cannot be written (ENOSPC): one line naming the file and the cause, no traceback."""
    import errno

    from repro import record

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(record, "write_json_atomic", full)
    message = _status_error(["model=tiny-llama", "env=offline"])
    assert "No space left on device" in message and "repro_sweep.json" in message


def test_status_on_a_read_only_disk_is_one_line(tmp_path, monkeypatch):
    """`repro status <overrides>` needs a temporary folder: a read-only one (chmod; root ignores chmod, so there the
    read-only file system is simulated) gives one line; so does an unreadable sweep folder."""
    import errno
    import os
    import tempfile

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    monkeypatch.setattr(tempfile, "tempdir", str(ro))
    if os.access(ro, os.W_OK):                  # root
        def read_only(*a, **k):
            raise OSError(errno.EROFS, "Read-only file system", str(ro))
        monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    try:
        message = _status_error(["model=tiny-llama", "env=offline"])
    finally:
        ro.chmod(0o755)
    assert message.startswith("repro status: ") and ("Permission denied" in message or "Read-only" in message)
    assert str(ro) in message


@pytest.mark.parametrize("content,name,says", [
    (b"", "empty.txt", "a non-empty file"), (b"ten bytes.", "short.txt", "cannot make 51[23] tokens"),
    (b"abc\0def" * 200, "binary.txt", "NUL bytes"), (b"not json\n", "rows.jsonl", "one JSON object per line"),
    (b"\xff\xfe" * 400, "latin.txt", "not valid UTF-8"), (b"text " * 400, "data.csv", "a data file")])
def test_bad_data_files_fail_before_the_model_loads_with_the_users_name(tmp_path, monkeypatch, content, name, says):
    import repro.models.loading as loading
    from repro.run import preflight

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(ConfigError, match=says) as e:
        preflight(compose_run("model=tiny-llama", "env=offline", f"data.wikitext2.local_path={bad}"))
    assert e.value.field_name == "data.wikitext2.local_path"
    with pytest.raises(ConfigError, match=says) as e:
        preflight(compose_run("model=tiny-llama", "env=offline", "score=wanda", f"calib.local_path={bad}"))
    assert e.value.field_name == "calib.local_path"
