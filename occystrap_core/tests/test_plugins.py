"""Plugin discovery, isolation, validation, conflicts and `plugins list`."""

from __future__ import annotations

import json
import types
from dataclasses import replace

import pytest

import occystrap_core
from occystrap_core import hookimpl, plugins
from occystrap_core.errors import PluginConflictError, UnknownSchemeError
from occystrap_core.testing import FakeEntryPoint, plugin_module
from occystrap_core.types import InputSource, OutputTarget


def _source_plugin(name: str, *schemes: str, **opts: bool) -> types.ModuleType:
    @hookimpl(**opts)
    def occystrap_input_sources():
        yield InputSource(name=name, schemes=schemes, summary=f"{name} images",
                          factory=lambda uri, ctx: None)

    return plugin_module(occystrap_input_sources)


def _load(*eps, **kw) -> plugins.Plugins:
    warnings: list[str] = []
    loaded = plugins.load_plugins(entry_points=list(eps), warn=warnings.append, **kw)
    loaded.warnings = warnings  # type: ignore[attr-defined]
    return loaded


def test_entry_point_plugin_contributes_scheme_with_provenance():
    loaded = _load(FakeEntryPoint("occystrap-acme", _source_plugin("acme", "acme"), version="1.2"))
    entry = loaded.inputs.get("acme")
    assert entry.item.summary == "acme images"
    assert (entry.record.distribution, entry.record.version) == ("occystrap-acme", "1.2")


def test_import_failure_warns_once_and_others_keep_working():
    loaded = _load(FakeEntryPoint("occystrap-broken", ImportError("no module named nope")),
                   FakeEntryPoint("occystrap-acme", _source_plugin("acme", "acme")))
    assert loaded.inputs.get("acme")
    [record] = [r for r in loaded.records if r.name == "occystrap-broken"]
    assert record.status == "failed" and "no module named nope" in record.error
    assert len(loaded.warnings) == 1
    assert "occystrap-broken 1.0" in loaded.warnings[0]
    assert "--disable-plugin occystrap-broken" in loaded.warnings[0]


def test_strict_mode_reraises(monkeypatch):
    monkeypatch.setenv("OCCYSTRAP_STRICT_PLUGINS", "1")
    with pytest.raises(ImportError):
        _load(FakeEntryPoint("occystrap-broken", ImportError("boom")))


def test_unknown_hook_fails_validation_and_is_unregistered():
    @hookimpl
    def occystrap_no_such_hook():
        return None

    bad = plugin_module(occystrap_no_such_hook)
    loaded = _load(FakeEntryPoint("occystrap-old", bad))
    [record] = [r for r in loaded.records if r.name == "occystrap-old"]
    assert record.status == "failed" and "occystrap_no_such_hook" in record.error
    assert not loaded.pm.has_plugin("occystrap-old")


def test_bad_signature_fails_validation_without_partial_registration():
    @hookimpl
    def occystrap_input_sources(unexpected_argument):
        return []

    bad = plugin_module(occystrap_input_sources)
    loaded = _load(FakeEntryPoint("occystrap-sig", bad))
    assert [r.status for r in loaded.records if r.name == "occystrap-sig"] == ["failed"]
    assert not loaded.pm.has_plugin("occystrap-sig")


def test_wrong_contribution_type_fails_that_plugin_only():
    @hookimpl
    def occystrap_input_sources():
        yield OutputTarget(name="x", schemes=("x",), summary="", factory=lambda u, c: None)

    loaded = _load(FakeEntryPoint("occystrap-wrong", plugin_module(occystrap_input_sources)),
        FakeEntryPoint("occystrap-acme", _source_plugin("acme", "acme")))
    assert [r.status for r in loaded.records if r.name == "occystrap-wrong"] == ["failed"]
    assert loaded.inputs.get("acme")


def test_invalid_scheme_is_rejected_at_load():
    loaded = _load(FakeEntryPoint("occystrap-bad", _source_plugin("bad", "no spaces")))
    [record] = [r for r in loaded.records if r.name == "occystrap-bad"]
    assert record.status == "failed" and "invalid scheme" in record.error


def test_scheme_claimed_twice_names_both_distributions():
    loaded = _load(FakeEntryPoint("occystrap-one", _source_plugin("one", "dup")),
                   FakeEntryPoint("occystrap-two", _source_plugin("two", "dup"), version="2.0"))
    with pytest.raises(PluginConflictError) as e:
        loaded.inputs.get("dup")
    assert "occystrap-one 1.0" in str(e.value) and "occystrap-two 2.0" in str(e.value)


def test_hook_that_raises_fails_that_plugin_only_and_drops_all_it_gave():
    @hookimpl
    def occystrap_output_targets():
        raise RuntimeError("no outputs today")

    half = plugin_module(_source_plugin("half", "half").occystrap_input_sources,
                         occystrap_output_targets)
    loaded = _load(FakeEntryPoint("occystrap-half", half),
                   FakeEntryPoint("occystrap-acme", _source_plugin("acme", "acme")))
    [record] = [r for r in loaded.records if r.name == "occystrap-half"]
    assert record.status == "failed" and record.error == "RuntimeError: no outputs today"
    assert loaded.warnings == [("plugin occystrap-half 1.0 failed to load (RuntimeError: no "
                                "outputs today); disable it with --disable-plugin occystrap-half")]
    assert not loaded.pm.has_plugin("occystrap-half")
    assert loaded.inputs.get("acme")
    with pytest.raises(UnknownSchemeError):  # its input, collected before, went with it
        loaded.inputs.get("half")


def test_broken_builtin_is_a_bug_and_raises():
    @hookimpl
    def occystrap_filters():
        raise RuntimeError("core bug")

    with pytest.raises(RuntimeError, match="core bug"):
        plugins.load_plugins(builtins=[plugin_module(occystrap_filters)], load_entry_points=False)


def test_unhashable_plugin_object_fails_with_a_clear_error():
    loaded = _load(FakeEntryPoint("occystrap-ns", types.SimpleNamespace()))
    [record] = [r for r in loaded.records if r.name == "occystrap-ns"]
    assert record.status == "failed" and "SimpleNamespace is not hashable" in record.error


def test_contribution_hooks_are_traced_by_pluggy(monkeypatch, capsys):
    monkeypatch.setenv("OCCYSTRAP_TRACE_PLUGINS", "1")
    _load(FakeEntryPoint("occystrap-acme", _source_plugin("acme", "acme")))
    trace = capsys.readouterr().err
    assert "occystrap_input_sources [hook]" in trace
    finished = [line for line in trace.splitlines()
                if "finish occystrap_input_sources -->" in line]
    assert len(finished) == 2  # one call per contributing plugin: acme, and the core's dir://
    assert "occystrap_output_targets [hook]" in trace  # the built-ins' outputs, too


def test_wrapper_sees_and_changes_each_plugins_contributions():
    seen: list[list[str]] = []

    @hookimpl(wrapper=True)
    def occystrap_input_sources():
        results = yield
        items = [item for result in results for item in result]
        seen.append([item.name for item in items])
        return [[replace(i, summary=i.summary.upper()) for i in items if i.name != "hidden"]]

    # registered last: collection runs after every plugin is registered
    loaded = _load(FakeEntryPoint("occystrap-acme", _source_plugin("acme", "acme")),
                   FakeEntryPoint("occystrap-hidden", _source_plugin("hidden", "hidden")),
                   FakeEntryPoint("occystrap-wrapper", plugin_module(occystrap_input_sources)))
    assert sorted(seen) == [["acme"], ["dir"], ["hidden"]]  # dir: the core's own
    entry = loaded.inputs.get("acme")
    assert entry.item.summary == "ACME IMAGES" and entry.record.name == "occystrap-acme"
    with pytest.raises(UnknownSchemeError):
        loaded.inputs.get("hidden")
    rows = {r.name: r.as_dict() for r in loaded.records}
    assert rows["occystrap-wrapper"]["input_schemes"] == []
    assert rows["occystrap-wrapper"]["hooks"] == ["occystrap_input_sources"]


@pytest.mark.parametrize("first_opts, order", [({}, ["two", "one"]),
                                               ({"tryfirst": True}, ["one", "two"])])
def test_contributions_follow_pluggy_call_order(first_opts, order):
    loaded = _load(FakeEntryPoint("occystrap-one", _source_plugin("one", "dup", **first_opts)),
                   FakeEntryPoint("occystrap-two", _source_plugin("two", "dup")))
    entries = loaded.contributions("occystrap_input_sources")
    # LIFO unless tryfirst, as pluggy calls
    assert [e.item.name for e in entries if not e.record.builtin] == order
    with pytest.raises(PluginConflictError, match=f"both occystrap-{order[0]} 1.0 and "
                                                  f"occystrap-{order[1]} 1.0"):
        loaded.inputs.get("dup")


def test_disabled_plugins_are_never_imported(monkeypatch):
    class Exploding:
        name = "occystrap-secret"
        dist = FakeEntryPoint("occystrap-secret", None).dist

        def load(self):
            raise AssertionError("a disabled plugin was imported")

    loaded = _load(Exploding(), disabled=["occystrap-secret"])
    assert [r.status for r in loaded.records if r.name == "occystrap-secret"] == ["disabled"]

    monkeypatch.setenv("OCCYSTRAP_DISABLE_PLUGINS", "occystrap-other, occystrap-secret")
    loaded = _load(Exploding())
    assert [r.status for r in loaded.records if r.name == "occystrap-secret"] == ["disabled"]


def test_builtins_registered_once_and_not_disableable():
    loaded = _load(disabled=["occystrap-core"])
    builtin = [r for r in loaded.records if r.builtin]
    assert builtin and all(r.status == "active" for r in builtin)
    assert len({r.name for r in builtin}) == len(builtin)


def test_unknown_scheme_lists_available():
    loaded = _load(FakeEntryPoint("occystrap-acme", _source_plugin("acme", "acme")))
    with pytest.raises(UnknownSchemeError,
                       match=r"unknown input scheme 'nope' \(available: acme, dir\)"):
        loaded.inputs.get("nope")


def test_installed_distributions_are_discovered():
    """The in-repo plugins are found through real entry points, each exactly once."""
    names = [ep.name for ep in plugins.discover_entry_points()]
    for dist in ("occystrap-tarball", "occystrap-registry", "occystrap-docker", "occystrap-quay"):
        assert names.count(dist) == 1


def test_plugins_list_shows_broken_plugin(run_cli, register_plugin):
    register_plugin(ImportError("cannot import name 'x'"), name="occystrap-broken")
    result = run_cli("plugins", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["occystrap-broken"]["status"] == "failed"
    assert "cannot import name" in rows["occystrap-broken"]["error"]
    assert rows["occystrap-tarball"]["status"] == "active"
    assert "tar" in rows["occystrap-tarball"]["input_schemes"]
    assert "Warning: plugin occystrap-broken 1.0 failed to load" in result.stderr

    text = run_cli("plugins", "list")
    assert text.exit_code == 0
    assert "occystrap-broken (occystrap-broken 1.0) failed" in text.stdout


def test_disable_plugin_option_hides_its_schemes(run_cli):
    result = run_cli("--disable-plugin", "occystrap-tarball", "info", "tar://x.tar")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: unknown input scheme 'tar'")


def test_every_hook_is_documented_with_a_docstring():
    from pathlib import Path

    from occystrap_core import hookspecs

    docs = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text()
    names = [n for n in dir(hookspecs) if n.startswith("occystrap_")]
    assert names
    for name in names:
        assert f"`{name}`" in docs, f"{name} missing from docs/plugins.md"
        doc = getattr(hookspecs, name).__doc__
        assert "Example" in doc or "Returns" in doc, f"{name} docstring lacks reference sections"


def test_version_lists_plugins_even_when_one_is_broken(run_cli, register_plugin):
    from occystrap_core import __version__

    register_plugin(ImportError("nope"), name="occystrap-broken")
    result = run_cli("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"occystrap {__version__}\n")
    assert "occystrap-registry 0.5.0 (active)" in result.stdout
    assert "occystrap-broken 1.0 (failed)" in result.stdout


def test_lazy_factory_imports_only_when_called(tmp_path, monkeypatch):
    import sys

    from occystrap_core.types import lazy

    (tmp_path / "occy_lazy_probe.py").write_text("def make(a, b=0):\n    return ('made', a, b)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    factory = lazy("occy_lazy_probe:make")
    assert "occy_lazy_probe" not in sys.modules
    assert factory(1, b=2) == ("made", 1, 2)
    assert "occy_lazy_probe" in sys.modules
    with pytest.raises(ValueError, match="not 'module:attr'"):
        lazy("no_colon_here")


# --- whose bug an unexpected error may be -----------------------------------------

_ACME_PLUGIN = '''
from occystrap_core import hookimpl
from occystrap_core.api import ImageFilter
from occystrap_core.types import FilterSpec

from .broken import explode


def passing(inner, options, ctx):
    return ImageFilter(inner)


@hookimpl
def occystrap_filters():
    yield FilterSpec(name="acme-pass", summary="passes images", factory=passing)
    yield FilterSpec(name="acme-broken", summary="fails", factory=explode)
'''


@pytest.fixture
def acme(tmp_path, monkeypatch, register_plugin):
    """A third-party plugin with code of its own, in a package: its filter module calls
    a sibling module that raises."""
    import importlib

    from occystrap_core.testing import images

    package = tmp_path / "src" / "occy_acme_blame"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(_ACME_PLUGIN)
    (package / "broken.py").write_text(
        "def explode(inner, options, ctx):\n    raise RuntimeError('acme broke')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    register_plugin(importlib.import_module("occy_acme_blame.plugin"), name="occystrap-acme",
                    version="2.0")
    images.write_docker_archive(str(tmp_path / "in.tar"),
                                [images.sample_image("example.com/a/b", "v1")])
    return tmp_path


def test_an_error_in_a_plugins_own_code_is_blamed_on_it(acme, run_cli):
    result = run_cli("process", f"tar://{acme / 'in.tar'}", f"tar://{acme / 'out.tar'}",
                     "-f", "acme-broken")
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        "Error: unexpected RuntimeError: acme broke",
        "This may be a bug in occystrap-acme 2.0; try --disable-plugin occystrap-acme, or "
        "--debug for a traceback"]


def test_an_error_in_the_core_is_not_blamed_on_a_plugin_in_use(acme, run_cli, monkeypatch):
    from occystrap_core import pipeline

    def broken_copy(*args, **kwargs):
        raise RuntimeError("core broke")

    monkeypatch.setattr(pipeline, "copy", broken_copy)
    result = run_cli("process", f"tar://{acme / 'in.tar'}", f"tar://{acme / 'out.tar'}",
                     "-f", "acme-pass")
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        "Error: unexpected RuntimeError: core broke",
        f"This is a bug in occystrap {occystrap_core.__version__}; rerun with --debug for "
        f"a traceback"]
