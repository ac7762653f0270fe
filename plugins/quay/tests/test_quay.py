"""quay:// end to end: the fake Quay API lists, the real registry serves the images."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest

from occystrap_core.redact import redact_text
from occystrap_core.testing.registry import skopeo_args

NS = "acme"
REPOS = [f"app-{i:02d}" for i in range(10)]
MANY = "dir://x?unique_names=true"  # a destination made to hold many images


@pytest.fixture
def occy(run_cli: Callable[..., Any]) -> Callable[..., Any]:
    """The CLI with --insecure (the fake API and the registry speak plain HTTP)."""

    def run(*args: str, code: int | None = 0, env: dict[str, str] | None = None) -> Any:
        result = run_cli("--insecure", *args, env={"QUAY_TOKEN": "", **(env or {})})
        if code is not None:
            assert result.exit_code == code, result.stdout + result.stderr
        return result

    return run


@pytest.fixture
def src(quay: Any, seeded: Any) -> Callable[[str], str]:
    """``src("acme/app-0*:*")``: a quay:// URI for the fake API and the real registry."""

    def make(target: str, **options: str) -> str:
        query = "&".join([f"host={quay.host}", f"registry={seeded.registry.host}"]
                         + [f"{k}={v}" for k, v in options.items()])
        return f"quay://{target}?{query}"

    return make


def _manifest_digest(server: Any, ref: str) -> str:
    raw = subprocess.run(["skopeo", "--insecure-policy", "inspect", "--raw",
                          *skopeo_args(server), f"docker://{server.host}/{ref}"],
                         capture_output=True, timeout=60, check=True).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _uploads_and_layer_reads(requests: list[str], layer_digests: set[str]) -> list[str]:
    return [r for r in requests
            if re.match(r"(POST|PUT|PATCH) /v2/.*/blobs/", r)
            or (r.startswith("GET ") and r.rsplit("/", 1)[-1] in layer_digests)]


def test_mirror_20_images_then_warm_rerun_transfers_no_blob(occy, src, seeded, quay):
    dest = f"registry://{seeded.registry.host}/mirror/{{repo}}:{{tag}}"
    first = occy("-J", "4", "process", src(f"{NS}/app-0*:*"), dest)
    assert "20/20 images" in first.stderr and "failed" not in first.stderr
    assert len(re.findall(r"^\[\d+/20\] registry://", first.stderr, re.M)) == 20

    # The listing was paginated: 10 repositories at 3 a page (app-ghost matches no "app-0*"),
    # and 2 pages of tags (1 a page) per repository, each through the one API client.
    assert quay.paths().count("/api/v1/repository") == 4
    assert sum(p.endswith("/tag/") for p in quay.paths()) == 20

    with ThreadPoolExecutor(max_workers=8) as pool:
        refs = [(repo, tag) for repo in REPOS for tag in ("1.0", "2.0")]
        digests = list(pool.map(lambda rt: _manifest_digest(
            seeded.registry, f"mirror/{rt[0]}:{rt[1]}"), refs))
    assert digests == [seeded.images[rt].manifest_digest for rt in refs]

    layers = {d for image in seeded.images.values() for d in image.layer_digests}
    mark = len(seeded.registry.requests())
    warm = occy("process", src(f"{NS}/app-0*:*"), dest)
    assert "20/20 images" in warm.stderr
    assert re.search(r"Summary: 0 layers\b", warm.stderr), warm.stderr
    assert _uploads_and_layer_reads(seeded.requests_since(mark), layers) == []


def test_mirror_to_another_registry_then_warm_rerun(occy, src, seeded, quay, registry_plain,
                                                    request_log):
    dest = f"registry://{registry_plain.host}/quay-{uuid.uuid4().hex[:8]}/{{repo}}:{{tag}}"
    source = src(f"{NS}/app-0[0-4]:*")
    layers = {d for image in seeded.images.values() for d in image.layer_digests}

    def blob_traffic() -> list[tuple[str, str, str]]:
        return [r for r in request_log.requests
                if (r[0] in ("POST", "PUT", "PATCH") and "/blobs/" in r[2])
                or (r[0] == "GET" and r[2].rsplit("/", 1)[-1] in layers)]

    first = occy("process", source, dest)
    assert "10/10 images" in first.stderr
    assert any(r[1] == registry_plain.host and r[0] == "PUT" for r in blob_traffic())

    request_log.requests.clear()
    warm = occy("process", source, dest)
    assert "10/10 images" in warm.stderr and re.search(r"Summary: 0 layers\b", warm.stderr)
    assert blob_traffic() == []
    # one run, every plugin's client through the same transport stack
    assert {host for _, host, _ in request_log.requests} == \
        {quay.host, seeded.registry.host, registry_plain.host}


def test_failing_image_does_not_stop_the_others(occy, src, seeded):
    # app-ghost:1.0 is listed by the API but not in the registry.
    result = occy("process", src(f"{NS}/*:1.0"),
                  f"registry://{seeded.registry.host}/partial/{{repo}}:{{tag}}", code=1)
    assert "10/11 images, 1 failed" in result.stderr
    failed = result.stderr.split("Failed images:", 1)[1].strip().splitlines()
    assert len(failed) == 1 and f"{NS}/app-ghost:1.0" in failed[0] and "not found" in failed[0]
    assert _manifest_digest(seeded.registry, "partial/app-09:1.0") == \
        seeded.images[("app-09", "1.0")].manifest_digest


def test_dry_run_prints_the_plan_and_transfers_nothing(occy, src, seeded):
    mark = len(seeded.registry.requests())
    result = occy("process", "--dry-run", src(f"{NS}/app-0[0-4]:*"),
                  f"registry://{seeded.registry.host}/dry/{{namespace}}-{{repo}}:{{tag}}")
    plan = result.stdout.strip().splitlines()
    reg = seeded.registry.host
    assert plan[0] == f"registry://{reg}/{NS}/app-00:1.0 -> registry://{reg}/dry/acme-app-00:1.0"
    assert len(plan) == 10 and "nothing transferred" in result.stderr
    assert seeded.requests_since(mark) == []


def test_since_filters_repositories_and_tags(occy, src, seeded):
    # app-NN was last modified on 2024-01-(NN+1); its 2.0 is that recent, its 1.0 is old.
    result = occy("process", "--dry-run", src(f"{NS}/*:*", since="2024-01-06"),
                  "dir://out?unique_names=true")
    sources = [line.split(" -> ")[0] for line in result.stdout.splitlines()]
    reg = seeded.registry.host
    assert sources == [f"registry://{reg}/{NS}/app-{i:02d}:2.0" for i in range(5, 10)]


def test_info_json_array_with_an_error_entry(occy, src, seeded):
    result = occy("info", "-O", "json", src(f"{NS}/app-0[0-2]:1.0"))
    entries = json.loads(result.stdout)
    assert [e["manifest_digest"] for e in entries] == \
        [seeded.images[(f"app-0{i}", "1.0")].manifest_digest for i in range(3)]
    assert all(e["source"].endswith(f"app-0{i}:1.0") for i, e in enumerate(entries))

    with_ghost = occy("info", "-O", "json", src(f"{NS}/*:1.0"), code=1)
    entries = json.loads(with_ghost.stdout)
    assert len(entries) == 11
    errors = [e for e in entries if "error" in e]
    assert len(errors) == 1 and "app-ghost" in errors[0]["source"]

    text = occy("info", src(f"{NS}/app-0[0-1]:2.0"))
    assert text.stdout.count("Source:") == 2 and text.stdout.count("Manifest:") == 2


def test_template_destinations_for_dir_and_tar(occy, src, tmp_path):
    out = tmp_path / "dir"
    occy("process", src(f"{NS}/app-0[0-1]:*"), f"dir://{out}?unique_names=true")
    catalog = json.loads((out / "catalog.json").read_text())
    assert sum(len(tags) for tags in catalog.values()) == 4

    tars = tmp_path / "tars"
    tars.mkdir()
    occy("process", src(f"{NS}/app-00:*"), f"tar://{tars}/{{repo}}-{{tag}}.tar")
    assert sorted(p.name for p in tars.iterdir()) == ["app-00-1.0.tar", "app-00-2.0.tar"]


def test_destination_without_placeholders_is_refused(occy, src, seeded, tmp_path):
    mark = len(seeded.registry.requests())
    result = occy("process", src(f"{NS}/app-0[0-1]:*"),
                  f"registry://{seeded.registry.host}/one/image:latest", code=1)
    assert result.stderr.startswith("Error: destination ")
    assert "would write both" in result.stderr and "{repo}" in result.stderr
    unknown = occy("process", src(f"{NS}/app-00:*"), f"tar://{tmp_path}/{{image}}.tar", code=1)
    assert "unknown placeholder {image}" in unknown.stderr
    assert seeded.requests_since(mark) == []


def test_token_from_option_environment_or_uri(occy, src, quay):
    quay.token = "s3cret"
    target = f"{NS}/app-00:1.0"
    refused = occy("--quay-token", "wrong", "process", "--dry-run", src(target), MANY,
                   code=1)
    assert refused.stderr.startswith(f"Error: quay API at {quay.host}: ")
    assert "HTTP 401" in refused.stderr and "Invalid bearer token" in refused.stderr
    missing = occy("process", "--dry-run", src(target), MANY, code=1)
    # the hint is not taken for a secret (redacted, and the line's end with it)
    assert "(no token given: use --quay-token, QUAY_TOKEN or a token in the URI)" in \
        missing.stderr, missing.stderr

    occy("--quay-token", "s3cret", "process", "--dry-run", src(target), MANY)
    occy("process", "--dry-run", src(target), MANY, env={"QUAY_TOKEN": "s3cret"})
    by_uri = occy("process", "--dry-run", src(target, token="s3cret"), MANY)
    assert "s3cret" not in by_uri.stdout + by_uri.stderr
    assert {auth for _, _, auth in quay.requests} == {"Bearer wrong", None, "Bearer s3cret"}


def test_unknown_namespace_and_repository_are_clear_errors(occy, src, quay):
    namespace = occy("process", "--dry-run", src("nope/*:*"), MANY, code=1)
    assert namespace.stderr.startswith(f"Error: quay API at {quay.host}: listing repositories "
                                       f"of nope: HTTP 404")
    repo = occy("process", "--dry-run", src(f"{NS}/nothere:1.0"), MANY, code=1)
    assert f"listing tags of {NS}/nothere: HTTP 404" in repo.stderr
    tag = occy("process", "--dry-run", src(f"{NS}/app-00:9.9"), MANY, code=1)
    assert f"tag 9.9 not found in {NS}/app-00" in tag.stdout
    empty = occy("process", "--dry-run", src("empty/*:*"), MANY)
    assert "0 images would be copied" in empty.stderr


def test_unreachable_api(occy, seeded):
    result = occy("--retries", "0", "process", "--dry-run",
                  f"quay://{NS}?host=127.0.0.1:1&registry={seeded.registry.host}", MANY,
                  code=1)
    assert result.stderr.startswith("Error: quay API at 127.0.0.1:1: listing repositories of "
                                    f"{NS}: cannot connect")


def test_api_calls_are_retried_by_the_shared_transport(occy, src, quay):
    quay.fail_next = 1
    result = occy("--retries", "2", "process", "--dry-run", src(f"{NS}/app-00:*"), MANY)
    assert len(result.stdout.splitlines()) == 2
    assert len(quay.requests) == 3  # the 503, its retry, and the second tag page


def test_other_single_image_commands_refuse_a_set(occy, src):
    result = occy("check", "--fast", src(f"{NS}/app-00:*"), code=1)
    assert "names several images; check takes one" in result.stderr


def test_default_tag_is_latest(occy, src, seeded, quay):
    occy("process", "--dry-run", src(NS), MANY)
    specific = [q.get("specificTag") for p, q, _ in quay.requests if p.endswith("/tag/")]
    assert specific and all(s == ["latest"] for s in specific)


def test_single_image_dry_run(occy, seeded, tmp_path: Path):
    reg = seeded.registry.host
    result = occy("process", "--dry-run", f"registry://{reg}/{NS}/app-00:1.0",
                  f"tar://{tmp_path}/x.tar")
    assert result.stdout.strip() == f"registry://{reg}/{NS}/app-00:1.0 -> tar://{tmp_path}/x.tar"
    assert not (tmp_path / "x.tar").exists()


def test_quay_token_is_the_quay_plugins_secret_global_option(run_cli):
    shown = run_cli("--help")
    assert re.search(r"--quay-token TEXT\s+Quay API token \(quay:// sources\)\.", shown.stdout)
    rows = {r["name"]: r for r in json.loads(run_cli("plugins", "list", "--json").stdout)}
    assert rows["occystrap-quay"]["global_options"] == ["quay-token"]
    assert run_cli("--quay-token", "token-from-option", "plugins", "list").exit_code == 0
    assert run_cli("plugins", "list", env={"QUAY_TOKEN": "token-from-env"}).exit_code == 0
    assert redact_text("token-from-option token-from-env") == "REDACTED REDACTED"
    gone = run_cli("--disable-plugin", "occystrap-quay", "--quay-token", "x", "plugins", "list")
    assert gone.exit_code == 2 and "No such option '--quay-token'" in gone.stderr


def test_sync_takes_a_quay_namespace_through_its_lister(occy, src, seeded):
    """quay:// as a sync source: listed by the Quay lister, checked by HEAD, copied."""
    dest = f"registry://{seeded.registry.host}/synced/{{repo}}:{{tag}}"
    first = occy("sync", "-O", "json", src(f"{NS}/app-0[12]:*"), dest)
    report = json.loads(first.stdout)
    assert report["counts"] == {"copied": 4}, report
    assert sorted(i["destination"].rsplit("/", 1)[1] for i in report["images"]) == [
        "app-01:1.0", "app-01:2.0", "app-02:1.0", "app-02:2.0"]
    again = json.loads(occy("sync", "-O", "json", src(f"{NS}/app-0[12]:*"), dest).stdout)
    assert again["counts"] == {"skipped": 4}, again


def test_a_repository_the_token_may_not_read_is_skipped(occy, src, seeded, quay):
    """Quay lists a repository whose tags the token may not read (403): it is skipped
    with a warning naming it, and the others are copied; only when no repository can
    be listed does the run fail, with the API's answer."""
    quay.forbidden = {"app-01"}
    dest = f"registry://{seeded.registry.host}/part-{uuid.uuid4().hex[:6]}/{{repo}}:{{tag}}"
    result = occy("process", src(f"{NS}/app-0[0-2]:1.0"), dest)
    assert "2/2 images" in result.stderr, result.stderr
    warned = [line for line in result.stderr.splitlines() if "app-01" in line]
    assert len(warned) == 1 and "HTTP 403" in warned[0] and "skipped" in warned[0], \
        result.stderr
    quay.forbidden = {"app-00", "app-01"}
    refused = occy("process", "--dry-run", src(f"{NS}/app-0[01]:1.0"), MANY, code=1)
    assert refused.stderr.startswith(f"Error: quay API at {quay.host}: listing tags of "
                                     f"{NS}/app-0"), refused.stderr
    assert "HTTP 403" in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr


def test_sync_skips_a_repository_the_token_may_not_read(occy, src, seeded, quay):
    """sync follows process's rule: a listed repository whose tags answer 403 is skipped
    with one warning naming it, the others are copied; a source none of whose matching
    repositories can be read fails, as does one that names the refused repository."""
    quay.forbidden = {"app-01"}
    dest = f"registry://{seeded.registry.host}/sk-{uuid.uuid4().hex[:6]}/{{repo}}:{{tag}}"
    result = occy("sync", "-O", "json", src(f"{NS}/app-0[0-2]:*"), dest)
    report = json.loads(result.stdout)
    assert report["counts"] == {"copied": 4}, report
    warned = [line for line in result.stderr.splitlines() if "app-01" in line]
    assert len(warned) == 1 and "HTTP 403" in warned[0] and "skipped" in warned[0], \
        result.stderr
    quay.forbidden = {"app-00", "app-01"}
    for pattern in (f"{NS}/app-0[01]:*", f"{NS}/app-01:*"):
        refused = occy("sync", "-O", "json", src(pattern), dest, code=1)
        failed = json.loads(refused.stdout)["images"]
        assert [i["state"] for i in failed] == ["failed"], failed
        assert "HTTP 403" in failed[0]["error"], failed
