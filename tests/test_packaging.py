"""Real packaging: import cost of the CLI, and a third-party distribution end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from occystrap_core.testing.registry import push_sample_image

DUMMY = Path(__file__).parent / "data" / "occystrap-dummy"
HEAVY = ("httpx", "httpcore", "h2", "isal", "zstandard", "requests", "requests_unixsocket")

_PROBE = textwrap.dedent("""
    import json, sys
    from occystrap_core import cli
    sys.argv = ["occystrap"] + json.loads(sys.argv[1])
    try:
        cli.main()
    except SystemExit:
        pass
    print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)), file=sys.stderr)
""")


def _run_probe(*args: str) -> tuple[set[str], str]:
    """The modules a CLI run left imported, and what it wrote to stderr before that."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(list(args))],
                          capture_output=True, text=True, timeout=60)
    *shown, last = proc.stderr.strip().splitlines()
    return set(json.loads(last)), "\n".join(shown)


def _modules_after(*args: str) -> set[str]:
    return _run_probe(*args)[0]


@pytest.mark.parametrize("args", [("--help",), ("process", "--help")])
def test_help_loads_only_plugin_entry_modules(args):
    """Plugins' global options (--quay-token) are in the help: their entry modules, and
    nothing heavier, are imported."""
    modules = _modules_after(*args)
    assert not [m for m in modules if m.split(".")[0] in HEAVY]
    plugin_modules = {m for m in modules if m.startswith("occystrap_") and
                      not m.startswith("occystrap_core")}
    assert {"occystrap_tarball.plugin", "occystrap_quay.plugin"} <= plugin_modules
    assert all(m.count(".") == 0 or m.endswith(".plugin") for m in plugin_modules), plugin_modules


@pytest.fixture(scope="module")
def dummy_venv(tmp_path_factory) -> Path:
    """A venv that sees the installed occystrap and has occystrap-dummy installed."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-build-isolation",
                    "--no-deps", str(DUMMY)], check=True, timeout=300)
    return python


def _occystrap(python: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCCYSTRAP_")}
    return subprocess.run([str(python), "-m", "occystrap_core", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd)


@pytest.mark.slow
def test_third_party_distribution_is_listed_and_usable(dummy_venv, tmp_path):
    listing = _occystrap(dummy_venv, "plugins", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    assert rows["occystrap-dummy"]["status"] == "active"
    assert rows["occystrap-dummy"]["version"] == "0.0.1"
    assert rows["occystrap-dummy"]["input_schemes"] == ["dummy"]

    help_text = _occystrap(dummy_venv, "process", "--help")
    assert "dummy://" in help_text.stdout and "[occystrap-dummy]" in help_text.stdout

    info = _occystrap(dummy_venv, "info", "dummy://hello", "-O", "json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["name"] == "dummy.example/hello"

    out = tmp_path / "hello.tar"
    copy = _occystrap(dummy_venv, "process", "dummy://hello", f"tar://{out}")
    assert copy.returncode == 0, copy.stderr
    with tarfile.open(out) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == ["dummy.example/hello:latest"]

    disabled = _occystrap(dummy_venv, "--disable-plugin", "occystrap-dummy", "info", "dummy://x")
    assert disabled.returncode == 1
    assert disabled.stderr.startswith("Error: unknown input scheme 'dummy'")


def test_a_run_talking_http_imports_no_optional_extras():
    """httpcore imports trio whenever it is installed (80 ms), and httpx its own command
    line (rich, pygments: 20 ms); the CLI needs neither, and httpx still works. A run
    over plain HTTP never speaks HTTP/2, so h2 (which httpcore imports too) stays out."""
    modules = _modules_after("--retries", "0", "--insecure", "info",
                             "registry://127.0.0.1:9/nothing:here")
    assert {"httpx", "httpcore"} <= modules
    assert not [m for m in modules
                if m.split(".")[0] in {"trio", "rich", "pygments", "h2", "hpack"}]
    assert "httpx._main" not in modules


def test_a_warm_cached_copy_through_a_filter_imports_no_tar_code(registry_plain, tmp_path):
    """A warm cached copy reads no layer, so the tar code its filter runs on layers
    (tarfile, layertar: 1-2 ms of start-up) stays out; the cold copy needs it. Neither
    copies a pattern of images, so the listing code stays out of both."""
    push_sample_image(registry_plain, "probe/tar", "v1")
    host = registry_plain.host

    def copy(dest: str) -> set[str]:
        return _modules_after("--insecure", "--layer-cache", str(tmp_path / "cache"),
                              "process", f"registry://{host}/probe/tar:v1",
                              f"registry://{host}/{dest}:v1", "-f", "normalize-timestamps")

    listing = {"occystrap_core.listing", "occystrap_registry.listing"}
    cold = copy("probe/cold")
    assert {"tarfile", "occystrap_core.layertar"} <= cold and not cold & listing
    assert not copy("probe/warm") & {"tarfile", "occystrap_core.layertar", *listing}


def test_a_run_over_tls_still_speaks_http2_and_h2_imports_later(registry_tls, monkeypatch):
    """httpcore imported without h2 (transport/optional.py) still negotiates HTTP/2 when
    a TLS registry offers it, and h2 is importable by anyone afterwards."""
    push_sample_image(registry_tls, "probe/h2", "v1")
    args = ("--debug", "--ca-cert", registry_tls.ca_cert, "info",
            f"registry://{registry_tls.host}/probe/h2:v1")
    # one request at a time: HTTP/1.1, and neither h2 nor the event loop is imported
    modules, log = _run_probe(*args)
    assert '"HTTP/2 200 OK"' not in log and '"HTTP/1.1 200 OK"' in log, log[-2000:]
    assert not modules & {"h2", "asyncio", "anyio._backends._asyncio",
                           "occystrap_core.transport.h2"}
    monkeypatch.setenv("OCCYSTRAP_HTTP2_OVERLAP", "1")
    modules, log = _run_probe(*args)
    assert '"HTTP/2 200 OK"' in log, log[-2000:]
    assert {"h2", "httpcore._async.http2"} <= modules
    probe = ("from occystrap_core.transport.optional import import_httpcore\n"
             "import_httpcore(); import httpcore._sync.connection, h2.connection\n"
             "import sys; assert sys.modules['h2'] is not None")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_second_run_finds_its_plugins_without_scanning(monkeypatch, tmp_path):
    """The entry points are remembered: importlib_metadata (and the scan of every
    distribution, and their metadata) are the first run's cost only."""
    monkeypatch.setenv("OCCYSTRAP_CACHE_DIR", str(tmp_path))
    assert "importlib_metadata" in _modules_after("--version")
    modules = _modules_after("--version")
    assert "importlib_metadata" not in modules
    assert {"occystrap_registry.plugin", "occystrap_proxy.plugin"} <= modules


def test_commands_in_modules_of_their_own_load_only_when_run():
    """``sync``, ``login``, the registry operations and 0.4.17's aliases cost a run of
    ``process`` (or ``--version``) nothing; each is there when named, under its name."""
    for args in (("--version",), ("process", "--help")):
        modules = _modules_after(*args)
        assert not modules & {"occystrap_core.sync.command", "occystrap_core.login",
                              "occystrap_core.ops_commands", "occystrap_core.legacy"}
    assert "occystrap_core.login" in _modules_after("login", "--help")
    from click.testing import CliRunner

    from occystrap_core.cli import LAZY_COMMANDS, cli

    for name in LAZY_COMMANDS:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert f"Usage: cli {name} " in result.output
    listed = CliRunner().invoke(cli, ["--help"]).output
    assert "  sync " in listed and "  tags " in listed and "fetch-to-oci" not in listed
