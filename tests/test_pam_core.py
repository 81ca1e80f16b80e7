"""pushauth-pam's plain parts: what a typed line means, outcomes, the configuration
file (every refusal names its key) and the user mapping. The flows themselves run
against real PAM, sshd and the broker in test_pam.py and test_pam_sshd.py."""

from __future__ import annotations

import grp
import os
import pwd
import tomllib
from pathlib import Path

import pytest
from pam_world import pam_service
from support import assert_cli_error, console_script, run_cli

from protocol.challenge import Status
from relying_party.host.config import TomlReader
from relying_party.host.store import UserStore
from relying_party.pam import core, mapping
from relying_party.pam.config import KEYS, ConfigError, load, parse
from relying_party.pam.core import Outcome


def test_a_line_typed_at_the_number_prompt() -> None:
    assert core.read_answer("", "47") == core.WaitForPush()
    assert core.read_answer(None, "47") == core.WaitForPush()  # nobody to ask (pam_exec)
    assert core.read_answer(" 47 ", "47") == core.WaitForPush()  # the number typed here too
    assert core.read_answer("Code", "47") == core.AskCode()
    assert core.read_answer("123456", "47") == core.Totp("123456")
    assert core.read_answer("123456", "123456") == core.WaitForPush()  # a 6-digit number first
    assert core.read_answer("12345", "47") == core.WaitForPush()
    assert core.clean_code("123 456") == "123456"
    assert core.clean_code("12a456") is None


def test_only_a_verified_approval_a_code_fail_open_or_bypass_allow() -> None:
    assert core.outcome_of(Status.APPROVED) is Outcome.APPROVED
    assert core.outcome_of(Status.PENDING) is Outcome.EXPIRED
    assert core.outcome_of(Status.UNKNOWN) is Outcome.ENDED
    allowed = {o for o in Outcome if core.pam_result(o) == "PAM_SUCCESS"}
    assert allowed == {Outcome.APPROVED, Outcome.TOTP_OK, Outcome.FAIL_OPEN, Outcome.BYPASS}
    assert core.pam_result(Outcome.BROKER_UNAVAILABLE) == "PAM_AUTHINFO_UNAVAIL"
    assert core.pam_result(Outcome.BROKER_ERROR) == "PAM_AUTH_ERR"  # never routed to fail open
    assert core.pam_result(Outcome.CONFIG_ERROR) == "PAM_SERVICE_ERR"
    assert set(core.MESSAGES) == set(Outcome)  # every outcome says something (or "" on purpose)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    path.write_text("pak_test\n")
    path.chmod(0o600)
    return path


def config_text(key: Path, extra: str = "", users: str = "") -> dict[str, object]:
    return tomllib.loads(
        f'[broker]\nurl = "http://127.0.0.1:1"\napi_key_file = "{key}"\n{extra}\n[users]\n{users}'
    )


def test_defaults_and_relative_paths(key: Path, tmp_path: Path) -> None:
    config = parse(config_text(key, '[pam]\nstore = "users.db"'), base=tmp_path)
    assert config.api_key == "pak_test"
    assert config.store == tmp_path / "users.db"
    # Digits and lifetime left out: not sent, the RP's policy at the broker decides.
    assert not config.fail_open and config.push_ttl is None and config.digits is None
    named = parse(config_text(key, "[challenge]\ndigits = 6\n[timeouts]\npush = 120"), base=tmp_path)
    assert (named.digits, named.push_ttl) == (6, 120)


@pytest.mark.parametrize(
    ("extra", "key_name"),
    [
        ("[challenge]\ndigits = 1", "challenge.digits"),
        ("[timeouts]\npush = 5", "timeouts.push"),
        ("[timeouts]\nrequest = 0", "timeouts.request"),
        ('[challenge]\ncode_fallback = "yes"', "challenge.code_fallback"),
        # nan and inf passed, and every sign-in then waited for ever.
        ("[timeouts]\nrequest = nan", "timeouts.request"),
        ("[timeouts]\nenroll = inf", "timeouts.enroll"),
        # A misspelled key or table would leave the default in force without a word.
        ('[pam]\nstroe = "/tmp/x"', "pam.stroe"),
        ("[timeout]\npush = 5", "timeout"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(key: Path, tmp_path: Path, extra: str, key_name: str) -> None:
    with pytest.raises(ConfigError, match=key_name.replace(".", r"\.")):
        parse(config_text(key, extra), base=tmp_path, name="pam.toml")


@pytest.mark.parametrize("url", ["http://", "http://a b:99999", "ftp://broker.example", "http://[::1"])
def test_a_broker_url_no_request_could_use_is_refused(key: Path, tmp_path: Path, url: str) -> None:
    bad = tomllib.loads(f'[broker]\nurl = "{url}"\napi_key_file = "{key}"')
    with pytest.raises(ConfigError, match=r"pam\.toml: broker\.url: "):
        parse(bad, base=tmp_path, name="pam.toml")


def test_the_shipped_example_holds_only_keys_the_module_reads() -> None:
    example = Path(__file__).resolve().parents[1] / "deploy" / "ssh" / "pam.toml"
    TomlReader(tomllib.loads(example.read_text()), example.parent, str(example)).refuse_unknown(KEYS)


def test_when_unreachable_and_template_are_checked(key: Path, tmp_path: Path) -> None:
    bad = tomllib.loads(f'[broker]\nurl = "http://x"\napi_key_file = "{key}"\nwhen_unreachable = "maybe"')
    with pytest.raises(ConfigError, match="when_unreachable"):
        parse(bad, base=tmp_path)
    with pytest.raises(ConfigError, match=r"users\.template"):
        parse(config_text(key, users='template = "{uid}"'), base=tmp_path)


def test_the_api_key_file_must_be_root_only(key: Path, tmp_path: Path) -> None:
    for mode in (0o640, 0o604, 0o620):
        key.chmod(mode)
        with pytest.raises(ConfigError, match=rf"mode 0{mode:o}\): refused; chmod 600"):
            parse(config_text(key), base=tmp_path)
    key.chmod(0o400)
    assert parse(config_text(key), base=tmp_path).api_key == "pak_test"
    with pytest.raises(ConfigError, match="cannot read"):
        parse(config_text(tmp_path / "missing"), base=tmp_path)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("[broker\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(tmp_path / "bad.toml")


def test_user_mapping_by_template_or_map_file(key: Path, tmp_path: Path) -> None:
    config = parse(config_text(key, users='template = "{user}@example.com"'), base=tmp_path)
    assert mapping.pushauth_user(config, "alice") == "alice@example.com"
    assert mapping.pushauth_user(config, "bad name") is None
    (tmp_path / "users.map").write_text("# local pushauth\nalice  a.smith@example.com\n")
    config = parse(config_text(key, users='map_file = "users.map"'), base=tmp_path)
    assert mapping.pushauth_user(config, "alice") == "a.smith@example.com"
    assert mapping.pushauth_user(config, "bob") is None  # not listed: no push sign-in
    (tmp_path / "users.map").write_text("alice\n")
    with pytest.raises(ConfigError, match="line 1"):
        parse(config_text(key, users='map_file = "users.map"'), base=tmp_path)


@pytest.mark.parametrize("template", ["{user} x", "{user}/x", "{user}@" + "e" * 63])
def test_a_template_that_makes_no_valid_name_is_refused(key: Path, tmp_path: Path, template: str) -> None:
    with pytest.raises(ConfigError, match=r"users\.template: .* makes no valid pushauth user name"):
        parse(config_text(key, users=f'template = "{template}"'), base=tmp_path)


def test_a_map_file_line_with_an_invalid_name_is_refused_naming_the_line(key: Path, tmp_path: Path) -> None:
    (tmp_path / "users.map").write_text("alice alice@example.com\n# ok\nnobody no/body\n")
    with pytest.raises(ConfigError, match=r"users\.map_file: .*users\.map line 3: pushauth user 'no/body'"):
        parse(config_text(key, users='map_file = "users.map"'), base=tmp_path)


def test_check_config_refuses_a_template_that_maps_nobody(key: Path, tmp_path: Path) -> None:
    path = tmp_path / "pam.toml"
    path.write_text(
        f'[broker]\nurl = "http://127.0.0.1:1"\napi_key_file = "{key}"\n[users]\ntemplate = "{{user}} x"\n'
    )
    result = run_cli([console_script("pushauth-pam"), "--config", path, "check-config"])
    assert result.returncode == 1, result.stdout
    assert "users.template" in result.stderr and "' '" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Host\\u0007", "must not contain control, format or invisible characters (found U+0007)"),
        ("Host\\u200b", "must not contain control, format or invisible characters (found U+200B"),
        ("", "must be 1 to 256 characters"),
        ("h" * 257, "must be 1 to 256 characters"),
    ],
)
def test_check_config_refuses_an_app_name_the_broker_would_refuse_in_every_push(
    key: Path, tmp_path: Path, name: str, why: str
) -> None:
    """pam.app_name goes into every push's context, where the broker refuses a control or
    invisible character or more than 256 characters (400): every sign-in was denied
    (outcome=broker_error) while check-config said the configuration was fine."""
    path = tmp_path / "pam.toml"
    path.write_text(
        f'[broker]\nurl = "http://127.0.0.1:1"\napi_key_file = "{key}"\n[pam]\napp_name = "{name}"\n'
    )
    result = run_cli([console_script("pushauth-pam"), "--config", path, "check-config"])
    line = assert_cli_error(result, contains=f"pam.app_name: {why}")
    assert result.returncode == 1, line


def test_bypass_by_primary_group(key: Path, tmp_path: Path) -> None:
    me = pwd.getpwuid(os.getuid())
    primary = grp.getgrgid(me.pw_gid).gr_name
    config = parse(config_text(key, users=f'bypass_groups = ["no-such-group-x", "{primary}"]'), base=tmp_path)
    assert mapping.in_bypass_group(config, me.pw_name) == primary
    assert mapping.in_bypass_group(config, "no-such-user-x") is None


def test_pam_line_names_the_config_by_its_absolute_path(key: Path, tmp_path: Path) -> None:
    # The module runs in the PAM application's working directory (sshd's is /): a relative
    # config= printed as given found no file, and every sign-in was a config_error.
    (tmp_path / "pam.toml").write_text(f'[broker]\nurl = "http://127.0.0.1:1"\napi_key_file = "{key}"\n')
    result = run_cli([console_script("pushauth-pam"), "--config", "pam.toml", "pam-line"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(f" config={tmp_path / 'pam.toml'}"), result.stdout


def test_pam_line_of_a_config_in_a_folder_with_a_space_is_read_by_pam_as_one_argument(
    key: Path, tmp_path: Path
) -> None:
    """PAM splits a pam.d line at blanks: printed bare, config=/x/pam dir/pam.toml reached the
    module as config=/x/pam, and every sign-in was a config_error ("misconfigured")."""
    folder = tmp_path / "pam dir"
    folder.mkdir()
    (folder / "pam.toml").write_text(
        f'[broker]\nurl = "http://127.0.0.1:1"\napi_key_file = "{key}"\n'
        '[pam]\nsyslog = false\nstore = "users.db"\n'
    )
    result = run_cli([console_script("pushauth-pam"), "--config", folder / "pam.toml", "pam-line"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(f" [config={folder / 'pam.toml'}]"), result.stdout
    with pam_service(result.stdout) as service:
        signin = run_cli(["pamtester", "-v", service, "root", "authenticate"])
    # Read and used: root has no device here (not: "Push sign-in is misconfigured").
    assert "No authenticator is set up for you on this host" in signin.stdout + signin.stderr, signin


def test_a_config_or_map_file_others_may_write_is_refused(key: Path, tmp_path: Path) -> None:
    # The module runs as root: whoever may write these files could turn the push off for
    # themselves (bypass_groups, when_unreachable = "allow", a map line to their own user).
    path = tmp_path / "pam.toml"
    path.write_text(
        f'[broker]\nurl = "http://127.0.0.1:1"\napi_key_file = "{key}"\n[users]\nmap_file = "users.map"\n'
    )
    (tmp_path / "users.map").write_text("alice alice\n")
    for mode in (0o664, 0o646):
        path.chmod(mode)
        with pytest.raises(
            ConfigError, match=rf"pam\.toml is writable by group or others \(mode 0{mode:o}\)"
        ):
            load(path)
    path.chmod(0o644)
    os.chown(path, 65534, -1)
    with pytest.raises(ConfigError, match=r"pam\.toml is not owned by root: refused; chown root"):
        load(path)
    os.chown(path, 0, -1)
    (tmp_path / "users.map").chmod(0o666)
    result = run_cli([console_script("pushauth-pam"), "--config", path, "check-config"])
    assert result.returncode == 1, result.stdout
    assert "users.map_file: " in result.stderr and "users.map is writable by group or others" in result.stderr
    (tmp_path / "users.map").chmod(0o644)
    assert load(path).user_map == {"alice": "alice"}


def test_a_key_or_map_file_that_is_not_utf8_is_a_configuration_error(key: Path, tmp_path: Path) -> None:
    """It was a UnicodeDecodeError traceback: from check-config, and from `exec` (and the
    PAM module), whose sign-in must end as a refusal with an audit line, never a crash."""
    path = tmp_path / "pam.toml"
    path.write_text(
        f'[broker]\nurl = "http://127.0.0.1:1"\napi_key_file = "{key}"\n[pam]\nsyslog = false\n'
        '[users]\nmap_file = "users.map"\n'
    )
    pam = console_script("pushauth-pam")
    for bad, named in ((tmp_path / "users.map", "users.map_file: "), (key, "broker.api_key_file: ")):
        (tmp_path / "users.map").write_text("alice alice\n")
        key.write_text("pak_test\n")
        bad.write_bytes(b"alice \xff\xfe\n")
        line = assert_cli_error(run_cli([pam, "--config", path, "check-config"]), contains=named)
        assert f"{bad} is not UTF-8 text" in line, line
        signin = run_cli([pam, "--config", path, "exec"], env={"PAM_USER": "alice", "PAM_TYPE": "auth"})
        assert signin.returncode == 2, signin.stderr
        assert "Traceback" not in signin.stderr and f"{bad} is not UTF-8 text" in signin.stderr, signin.stderr
        assert "outcome=config_error" in signin.stderr, signin.stderr
    (tmp_path / "users.map").unlink()
    key.write_text("pak_test\n")
    os.mkfifo(tmp_path / "users.map")  # check-config and every sign-in waited for a writer
    line = assert_cli_error(
        run_cli([pam, "--config", path, "check-config"], timeout=20), contains="users.map_file: "
    )
    assert f"{tmp_path / 'users.map'} is not a regular file" in line, line


def test_exec_and_check_config_help_say_what_they_do() -> None:
    pam = console_script("pushauth-pam")
    exec_help = run_cli([pam, "exec", "--help"]).stdout
    assert "PAM_USER" in exec_help and "2 configuration error" in exec_help and "pam_exec.so" in exec_help
    assert "misspelled" in run_cli([pam, "check-config", "--help"]).stdout


def test_check_config_says_where_the_audit_lines_go(key: Path, tmp_path: Path) -> None:
    path = tmp_path / "pam.toml"
    path.write_text(
        f'[broker]\nurl = "http://127.0.0.1:1"\napi_key_file = "{key}"\n'
        '[pam]\nsyslog = false\naudit_file = "audit.log"\napp_name = "db1"\n'
        "[challenge]\ncode_fallback = false\n"
    )
    out = run_cli([console_script("pushauth-pam"), "--config", path, "check-config"]).stdout
    assert f"audit lines: {tmp_path / 'audit.log'}\n" in out, out
    assert "shown on the device: 'db1'; verification codes: no" in out, out
    # Where no line can be written (sign-ins go on, so the lines would be lost in silence).
    for where, why in (
        (tmp_path, f"pam.audit_file: {tmp_path} is not a regular file"),
        (
            tmp_path / "no-such-folder" / "audit.log",
            f"the folder {tmp_path / 'no-such-folder'} does not exist",
        ),
    ):
        path.write_text(path.read_text().replace('audit_file = "audit.log"', f'audit_file = "{where}"'))
        assert_cli_error(
            run_cli([console_script("pushauth-pam"), "--config", path, "check-config"]), contains=why
        )
        path.write_text(path.read_text().replace(f'audit_file = "{where}"', 'audit_file = "audit.log"'))


def test_a_user_store_others_may_read_is_refused(key: Path, tmp_path: Path) -> None:
    # Its TOTP secrets give every user's verification codes: a 0644 store passed unnoticed.
    path = tmp_path / "pam.toml"
    path.write_text(
        f'[broker]\nurl = "http://127.0.0.1:1"\napi_key_file = "{key}"\n[pam]\nstore = "users.db"\n'
    )
    UserStore(tmp_path / "users.db").close()  # made 0600
    (tmp_path / "users.db").chmod(0o644)
    result = run_cli([console_script("pushauth-pam"), "--config", path, "devices", "alice"])
    assert result.returncode == 1, result.stdout
    assert "users.db is readable or writable by others (mode 0644): refused" in result.stderr, result.stderr
    (tmp_path / "users.db").chmod(0o600)
    assert "alice" in run_cli([console_script("pushauth-pam"), "--config", path, "devices", "alice"]).stderr
