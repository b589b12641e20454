"""d6tpipe's documentation, continued: the code blocks of its profiles (configuring d6tpipe),
settings (register, inheritance, updating, schema, local mode) and credentials (self-hosted
templates, read/write sets, settings files) sections, through pipedaemon_sdk.d6tpipe against
real servers; and the same d6tpipe-style settings in the native API (``upsert_remote``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

import pipedaemon_sdk.d6tpipe as d6tpipe
from pipedaemon_sdk import AuthFailedError, PipeClient
from tests.d6tpipe.test_d6tpipe_docs import far_for


def test_profiles_section(d6t_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # d6tpipe.api.ConfigManager().load() -- auto-creates the profile (warning), as d6tpipe
    with pytest.warns(UserWarning, match="auto created profile"):
        cfg = d6tpipe.api.ConfigManager().load()
    assert {"server", "filerepo", "filereporoot", "filedb"} <= set(cfg)
    assert (d6t_home / "d6tpipe" / "cfg.json").is_file()  # d6tpipe's config file, in its place
    # api.filerepo -- where files are stored
    api = d6tpipe.api.APILocal()
    assert api.filerepo == cfg["filerepo"] == api.client.get_profile_config()["filerepo"]
    # option 1: set custom path BEFORE init (an existing profile is kept, with a warning)
    with pytest.warns(UserWarning, match="already exists"):
        d6tpipe.api.ConfigManager().init({"filerepo": str(tmp_path / "ignored")})
    # make profiles: ConfigManager(profile='projectA').init({'filerepo': '/some/path/'})
    d6tpipe.api.ConfigManager(profile="user2").init()
    d6tpipe.api.ConfigManager(profile="projectA").init({"filerepo": str(tmp_path / "some" / "path")})
    d6tpipe.api.ConfigManager(profile="onprem").init({"server": "http://yourip"})
    a = d6tpipe.api.APILocal(profile="projectA")
    assert Path(a.filerepo) == tmp_path / "some" / "path" / "files" / "projectA"  # d6tpipe's layout
    assert d6tpipe.api.ConfigManager(profile="onprem").load()["server"] == "http://yourip"
    # d6tpipe.api.list_profiles() -- prints the config; here it also returns the names
    capsys.readouterr()
    names = d6tpipe.api.list_profiles()
    assert {"default", "user2", "projectA", "onprem"} <= set(names)
    assert '"projectA"' in capsys.readouterr().out
    # option 2: move file repo AFTER init
    (Path(a.filerepo) / "p1").mkdir(parents=True)
    (Path(a.filerepo) / "p1" / "f.csv").write_text("f\n")
    a.move_repo(str(tmp_path / "new" / "path"))
    assert a.filerepo == str(tmp_path / "new" / "path")
    assert (tmp_path / "new" / "path" / "p1" / "f.csv").read_text() == "f\n"
    assert a.list_local_pipes() == ["p1"]
    # option 3: manually move file repo and update config (moves no files)
    d6tpipe.api.ConfigManager(profile="projectA").update({"filerepo": str(tmp_path / "third")})
    assert d6tpipe.api.APILocal(profile="projectA").filerepo == str(tmp_path / "third")
    # update an existing config: token, username (kept in the file: the daemon has no use for them)
    d6tpipe.api.ConfigManager().update({"token": "tok-123"})
    d6tpipe.api.ConfigManager().update({"username": "me"})
    loaded = d6tpipe.api.ConfigManager().load()
    assert loaded["token"] == "tok-123" and loaded["username"] == "me" and loaded["key"] == api.key
    # profiles are separate: the same pipe name in two profiles, two folders
    assert d6tpipe.api.APILocal(profile="user2").filerepo != api.filerepo
    # wipe_all(confirm=False): the profile's pipes, files and config entry go
    u2 = d6tpipe.api.APILocal(profile="user2")
    Path(u2.filerepo, "x").mkdir(parents=True, exist_ok=True)
    u2.wipe_all(confirm=False)
    assert not Path(u2.filerepo).exists()
    assert "user2" not in json.loads((d6t_home / "d6tpipe" / "cfg.json").read_text())


def test_settings_section(d6t_home: Path, request: pytest.FixtureRequest, client: PipeClient) -> None:
    far = far_for("s3", request, name="vendor-parent")
    for name in ("dataA/monthly1.csv", "dataA/daily1.csv", "dataA/daily2.csv", "dataB/reports1.xlsx",
                 "dataA/backup1.csv", "dataA/x.xls"):
        far.put(name, name)
    api = d6tpipe.api.APILocal()
    # Pipe setting inheritance: settings_parent / settings_monthly / settings_daily / settings_reports
    response, data = d6tpipe.upsert_pipe(api, far.settings)
    assert response.status_code == 201
    for child, folder, pattern in (("vendor-monthly", "dataA", "monthly*.csv"),
                                   ("vendor-daily", "dataA", "daily*.csv"),
                                   ("vendor-reports", "dataB", "reports*.xlsx")):
        d6tpipe.upsert_pipe(api, {"name": child, "parent": "vendor-parent",
                                  "options": {"dir": folder, "include": pattern}})
    assert api.list_pipes() == ["vendor-daily", "vendor-monthly", "vendor-parent", "vendor-reports"]
    assert api.list_pipes(parent_only=True) == ["vendor-parent"]
    assert [p["name"] for p in api.list_pipes(names_only=False)] == api.list_pipes()
    assert d6tpipe.Pipe(api, "vendor-daily").pull() == ["daily1.csv", "daily2.csv"]
    assert d6tpipe.Pipe(api, "vendor-reports").scan_remote() == ["reports1.xlsx"]
    monthly = d6tpipe.Pipe(api, "vendor-monthly")
    assert monthly.remote_prefix == far.settings["options"]["remotepath"] + "dataA/"
    # Updating pipe settings: 'remote': 'remote-name', options dir/include/exclude, schema
    bucket = far.settings["location"]
    client.upsert_remote({"name": "remote-name", "protocol": "s3", "location": bucket,
                          "options": {k: far.settings["options"][k] for k in ("endpoint_url", "region")},
                          "credentials": far.settings["credentials"]})  # key/secret, as d6tpipe writes them
    settings = {"name": "pipe-name", "remote": "remote-name",
                "options": {"dir": "dataA", "include": "*.csv|*.xls", "exclude": "backup*.csv|backup*.xls"},
                "schema": {"pandas": {"sep": ",", "encoding": "utf8"}}}
    response, data = d6tpipe.upsert_pipe(api, settings)
    assert response.status_code == 201 and data["schema"]["pandas"]["sep"] == ","
    pipe = d6tpipe.Pipe(api, "pipe-name")
    assert pipe.scan_remote() == ["daily1.csv", "daily2.csv", "monthly1.csv", "x.xls"]
    assert pipe.settings["protocol"] == "s3" and pipe.remote_prefix == f"s3://{bucket}/dataA/"
    response, data = d6tpipe.upsert_pipe(api, {"name": "pipe-name", "description": "vendor files"})
    assert response.status_code == 200 and data["description"] == "vendor files"
    assert data["options"]["include"] == "*.csv|*.xls"  # an update keeps the keys not given
    # Data schemas: pipe.update_settings(settings); print(pipe.schema)
    schema = {"schema": {"pandas": {"sep": ",", "encoding": "utf8"}, "dask": {"sep": ",", "encoding": "utf8"},
                         "xls": {"pandas": {"sheet_name": "Sheet1"}}}}
    response, data = pipe.update_settings(schema)
    assert response.status_code == 200
    assert pipe.schema["xls"]["pandas"] == {"sheet_name": "Sheet1"} and pipe.schema["dask"]["sep"] == ","
    assert d6tpipe.Pipe(api, "pipe-name").schema == pipe.schema
    # Local mode: settings['protocol']='s3'; settings['options']={'remotepath': 's3://bucketname/foldername'}
    local_mode = {"name": "foldered", "protocol": "s3",
                  "options": {"remotepath": f"s3://{bucket}/dataB", "endpoint_url": far.settings["options"][
                      "endpoint_url"], "region": far.settings["options"]["region"]},
                  "credentials": far.settings["credentials"]}
    d6tpipe.upsert_pipe(api, local_mode)
    assert d6tpipe.Pipe(api, "foldered").pull() == ["reports1.xlsx"]


def test_credentials_section(d6t_home: Path, request: pytest.FixtureRequest, client: PipeClient) -> None:
    api = d6tpipe.api.APILocal()
    # ftp template: 'location': 'ftp.domain.com', 'options': {'remotepath': '/'},
    #               'credentials': {'username': 'name', 'password': 'secure'}
    far = far_for("ftp", request, name="yourftp")
    far.put("f.csv", "f\n")
    d6tpipe.upsert_pipe(api, far.settings)
    assert d6tpipe.Pipe(api, "yourftp").pull() == ["f.csv"]
    shown = api.client.get_pipe("yourftp")["settings"]["credentials"]
    assert set(shown.values()) == {"***"}  # never returned
    # separate read and write credentials: different logins; a wrong write login fails only pushes
    creds = far.settings["credentials"]
    rw = {**far.settings, "name": "remote-rw",
          "credentials": {"read": creds, "write": {"username": creds["username"], "password": "wrong"}}}
    d6tpipe.upsert_pipe(api, rw)
    pipe = d6tpipe.Pipe(api, "remote-rw")
    assert pipe.pull() == ["f.csv"]
    (pipe.dirpath / "up.csv").write_text("u\n")
    with pytest.raises(AuthFailedError):
        pipe.push()
    # Keeping credentials safe: (api.repopath/'.creds.json') with the settings by pipe name
    s3 = far_for("s3", request, name="pipe-name")
    s3.put("s.csv", "s\n")
    entry = {k: v for k, v in s3.settings.items() if k != "name"}
    (api.repopath / ".creds.json").write_text(json.dumps({"pipe-name": entry}))
    settings = {"name": "pipe-name", **d6tpipe.utils.loadjson(api.repopath / ".creds.json")["pipe-name"]}
    assert settings["credentials"]["key"] == s3.settings["credentials"]["key"]
    response, data = d6tpipe.upsert_pipe_json(api, api.repopath / ".creds.json", "pipe-name")
    assert response.status_code == 201 and d6tpipe.Pipe(api, "pipe-name").pull() == ["s.csv"]
    # or if you prefer yaml
    yaml_text = "pipe-name:\n  description: from yaml\n"
    (api.repopath / ".creds.yaml").write_text(yaml_text)
    assert d6tpipe.utils.loadyaml(api.repopath / ".creds.yaml")["pipe-name"]["description"] == "from yaml"
    response, data = d6tpipe.upsert_pipe_json(api, api.repopath / ".creds.yaml", "pipe-name")
    assert response.status_code == 200 and data["description"] == "from yaml"
    assert d6tpipe.Pipe(api, "pipe-name").scan_remote(cached=False) == ["s.csv"]  # credentials kept
    # d6tpipe.upsert_pipe(api, api.encode(settings)): the daemon seals credentials anyway
    assert api.encode(settings) == settings
    # sftp: credentials {'username', ...} as d6tpipe writes them
    sftp = far_for("sftp", request, name="sftp-pipe")
    sftp.put("h.csv", "h\n")
    d6tpipe.upsert_pipe(api, sftp.settings)
    assert d6tpipe.Pipe(api, "sftp-pipe").pull() == ["h.csv"]


def test_native_api_takes_d6tpipe_credentials(client: PipeClient, request: pytest.FixtureRequest,
                                              d6t_home: Path) -> None:
    """credentials.username (FTP, SFTP; each of read/write) and S3 key/secret in upsert_remote."""
    for kind in ("ftp", "sftp", "s3"):
        far = far_for(kind, request, name=f"n-{kind}")
        far.put("one.csv", "1\n")
        settings = {k: v for k, v in far.settings.items() if k != "name"}
        client.upsert_remote({"name": f"r-{kind}", **settings})
        check = client.check_remote(f"r-{kind}")
        assert check["ok"] and check["can_write"], check
        if kind != "s3":  # the login from the credentials is the one used
            assert far.settings["credentials"]["username"] in check["endpoint"]
    bad = far_for("ftp", request, name="n-bad")
    creds = bad.settings["credentials"]
    client.upsert_remote({**bad.settings, "name": "r-bad",
                          "credentials": {"read": {**creds, "username": "nobody"}, "write": creds}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check = client.check_remote("r-bad")
    assert not check["ok"] and not check["can_read"] and "530" in check["error"]["message"]
