"""docker:// input and output against a real Engine API (podman system service)."""

import hashlib
import json
import os
import subprocess
import sys
import tarfile

import occystrap_docker.daemon
from occystrap_core.testing.images import build_docker_archive


def _archive_image(path):
    """(config digest, diff_ids, RepoTags) of a docker-save archive."""
    with tarfile.open(path) as tar:
        entry = json.loads(tar.extractfile("manifest.json").read())[0]
        config = tar.extractfile(entry["Config"]).read()
    return ("sha256:" + hashlib.sha256(config).hexdigest(),
            json.loads(config)["rootfs"]["diff_ids"], entry["RepoTags"])


def test_round_trip_tar_docker_docker_tar(tmp_path, podman, docker_uri, process_ok):
    src, out = str(tmp_path / "in.tar"), str(tmp_path / "out.tar")
    built = build_docker_archive(src, name="example.com/rt/first", tag="v1", n_layers=3,
                                 seed=11, layout="legacy")
    process_ok(f"tar://{src}", docker_uri("example.com/rt/first:v1"))
    process_ok(docker_uri("example.com/rt/first:v1"), docker_uri("example.com/rt/second:v2"))
    process_ok(docker_uri("example.com/rt/second:v2"), f"tar://{out}")

    config_digest, diff_ids, repo_tags = _archive_image(out)
    assert config_digest == built["config_digest"]
    assert diff_ids == built["diff_ids"]
    assert repo_tags == ["example.com/rt/second:v2"]
    # the loaded image is the very same image (its ID is the config digest)
    assert podman.inspect("example.com/rt/second:v2")["Id"] == built["config_digest"]


def test_output_carries_the_destination_name(tmp_path, podman, docker_uri, process_ok):
    src = str(tmp_path / "in.tar")
    built = build_docker_archive(src, name="example.com/src/app", tag="orig", seed=12)
    process_ok(f"tar://{src}", docker_uri("registry.example:5000/team/dest:t1"))
    image = podman.inspect("registry.example:5000/team/dest:t1")
    assert image["Id"] == built["config_digest"]
    assert "registry.example:5000/team/dest:t1" in image["RepoTags"]
    assert podman.inspect("example.com/src/app:orig") is None  # not the source's name

    # no tag means latest; a port is not a tag
    process_ok(f"tar://{src}", docker_uri("localhost:5000/bare"))
    assert podman.inspect("localhost:5000/bare:latest")["Id"] == built["config_digest"]


def test_input_names_the_image_as_requested(podman, sample_in_daemon, docker_uri, info_json):
    built = sample_in_daemon("example.com/named/app", "v3", seed=13, layout="docker25")
    info = info_json(docker_uri("example.com/named/app:v3"))
    assert (info["name"], info["tag"]) == ("example.com/named/app", "v3")
    assert info["config_digest"] == built["config_digest"]
    assert [l["diff_id"] for l in info["layers"]] == built["diff_ids"]
    # podman's archive stores plain tars: the blob digest is the diff_id
    assert [l["digest"] for l in info["layers"]] == built["diff_ids"]
    assert {l["compression"] for l in info["layers"]} == {"none"}


def test_docker_host_is_honoured(podman, sample_in_daemon, run_cli):
    built = sample_in_daemon("example.com/env/app", "v1", seed=14)
    result = run_cli("info", "-O", "json", "docker://example.com/env/app:v1",
                     env={"DOCKER_HOST": f"unix://{podman.socket}"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config_digest"] == built["config_digest"]


def _docker_context(config_dir, name, host):
    """A docker CLI context, as `docker context create NAME --docker host=HOST` writes it."""
    meta = config_dir / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps(
        {"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host,
                                                               "SkipTLSVerify": False}}}))


def test_the_docker_context_is_honoured(tmp_path, podman, sample_in_daemon, run_cli,
                                        expect_error):
    # rootless Docker and Docker Desktop select their socket with a context
    built = sample_in_daemon("example.com/ctx/app", "v1", seed=20)
    config = tmp_path / "docker-config"
    _docker_context(config, "rootless", f"unix://{podman.socket}")
    _docker_context(config, "remote", "tcp://10.0.0.1:2376")
    (config / "config.json").write_text(json.dumps({"currentContext": "rootless"}))
    env = {"DOCKER_CONFIG": str(config), "DOCKER_HOST": None, "DOCKER_CONTEXT": None}
    result = run_cli("info", "-O", "json", "docker://example.com/ctx/app:v1", env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config_digest"] == built["config_digest"]

    expect_error(run_cli("info", "docker://example.com/ctx/app:v1",
                         env={**env, "DOCKER_CONTEXT": "remote"}),
                 "the docker context 'remote' (tcp://10.0.0.1:2376) is not supported")
    expect_error(run_cli("info", "docker://example.com/ctx/app:v1",
                         env={**env, "DOCKER_CONTEXT": "absent"}),
                 "docker context 'absent' (the current one) has no daemon endpoint")
    missing = str(tmp_path / "missing.sock")  # DOCKER_HOST still comes first
    expect_error(run_cli("info", "docker://example.com/ctx/app:v1",
                         env={**env, "DOCKER_HOST": f"unix://{missing}"}),
                 f"unix://{missing}: no such socket")


def test_no_socket(tmp_path, run_cli, expect_error):
    missing = str(tmp_path / "missing.sock")
    expect_error(run_cli("process", f"docker://busybox?socket={missing}", f"tar://{tmp_path}/o.tar"),
                 f"cannot connect to the Docker daemon at unix://{missing}: no such socket")
    expect_error(run_cli("info", "docker://busybox", env={"DOCKER_HOST": f"unix://{missing}"}),
                 f"unix://{missing}: no such socket")
    expect_error(run_cli("info", "docker://busybox", env={"DOCKER_HOST": "tcp://127.0.0.1:2375"}),
                 "DOCKER_HOST=tcp://127.0.0.1:2375 is not supported")
    assert not os.path.exists(tmp_path / "o.tar")


def test_a_socket_path_that_cannot_be_a_socket(tmp_path, run_cli, expect_error):
    regular = tmp_path / "docker.sock"
    regular.write_text("")
    long = tmp_path / ("x" * 120) / "docker.sock"  # sun_path holds 107 bytes
    for path, why in ((tmp_path, "that is a directory, not a socket"),
                      (regular, "that is not a socket"),
                      (long, f"the socket path is {len(str(long))} bytes long, longer than "
                             f"a unix socket allows (107)")):
        result = run_cli("info", f"docker://busybox?socket={path}")
        expect_error(result, f"cannot connect to the Docker daemon at unix://{path}: {why}")
        assert "connection refused" not in result.stderr and "OSError" not in result.stderr


def test_a_missing_default_socket_names_podmans(tmp_path, podman, monkeypatch, run_cli,
                                               expect_error):
    # Podman users have no /var/run/docker.sock, but a socket under XDG_RUNTIME_DIR
    missing = str(tmp_path / "docker.sock")
    monkeypatch.setattr(occystrap_docker.daemon, "DEFAULT_SOCKET", missing)
    runtime = tmp_path / "runtime"
    (runtime / "podman").mkdir(parents=True)
    os.symlink(podman.socket, runtime / "podman" / "podman.sock")
    env = {"XDG_RUNTIME_DIR": str(runtime), "DOCKER_HOST": None, "DOCKER_CONTEXT": None,
           "DOCKER_CONFIG": str(tmp_path / "no-config")}
    podman_socket = str(runtime / "podman" / "podman.sock")
    expect_error(run_cli("info", "docker://busybox", env=env),
                 f"unix://{missing}: no such socket", f"there is one at {podman_socket} "
                 f"(?socket={podman_socket})")


def test_image_not_found(tmp_path, podman, docker_uri, run_cli, expect_error):
    expect_error(run_cli("process", docker_uri("example.com/absent/app:v9"),
                         f"tar://{tmp_path}/o.tar"),
                 "image example.com/absent/app:v9 not found in the daemon")
    assert os.listdir(tmp_path) == []


def test_bad_references(tmp_path, podman, docker_uri, run_cli, expect_error):
    expect_error(run_cli("info", docker_uri("Upper/Case")), "invalid image reference 'Upper/Case'",
                 "lowercase")
    expect_error(run_cli("info", docker_uri("app:bad:tag")), "invalid")
    src = str(tmp_path / "in.tar")
    build_docker_archive(src)
    expect_error(run_cli("process", f"tar://{src}", docker_uri("app@sha256:" + "0" * 64)),
                 "takes a tag, not a digest")


def test_a_chosen_platform_is_asked_for_and_checked(podman, sample_in_daemon, docker_uri,
                                                    run_cli, expect_error):
    built = sample_in_daemon("example.com/plat/app", "v1", seed=15)  # linux/amd64
    uri = docker_uri("example.com/plat/app:v1")
    result = run_cli("--platform", "linux/x86_64", "info", "-O", "json", uri)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config_digest"] == built["config_digest"]
    expect_error(run_cli("--platform", "linux/arm64", "info", uri),
                 "for linux/amd64, not linux/arm64")


def test_input_by_image_id(tmp_path, podman, sample_in_daemon, docker_uri, info_json, process_ok,
                           run_cli, expect_error):
    built = sample_in_daemon("example.com/byid/app", "v1", seed=16)
    image_id = built["config_digest"]
    for written in (image_id, image_id[7:], image_id[7:19]):  # as `docker save` takes them
        info = info_json(docker_uri(written))
        assert info["config_digest"] == image_id, written
        assert (info["name"], info["tag"]) == (None, None), written  # an ID names no image
    process_ok(docker_uri(image_id[7:19]), f"tar://{tmp_path / 'out.tar'}")
    assert _archive_image(str(tmp_path / "out.tar"))[:2] == (image_id, built["diff_ids"])
    expect_error(run_cli("info", docker_uri("0" * 12)), "image 000000000000 not found")


def test_output_docker_hub_names_stay_docker_hub_names(tmp_path, podman, docker_uri,
                                                       process_ok, info_json):
    # Podman stores a name written without a registry as localhost/NAME: the archive
    # must carry the normalised name, as `podman pull busybox` would store it.
    src = str(tmp_path / "in.tar")
    built = build_docker_archive(src, name="example.com/src/app", tag="orig", seed=17)
    for dest, stored in (("hubapp:v1", "docker.io/library/hubapp:v1"),
                         ("someone/hubapp:v2", "docker.io/someone/hubapp:v2")):
        process_ok(f"tar://{src}", docker_uri(dest))
        image = podman.inspect(stored)
        assert image is not None and image["Id"] == built["config_digest"], dest
        assert stored in image["RepoTags"]
        assert not [t for t in image["RepoTags"] if t.startswith("localhost/")]
        assert info_json(docker_uri(dest))["config_digest"] == built["config_digest"]


def test_a_name_with_a_registry_is_not_resolved_as_a_short_name(tmp_path, podman,
                                                                sample_in_daemon, docker_uri,
                                                                process_ok, info_json):
    # Podman resolves the short name amb:v1 to localhost/amb:v1 first: a user who wrote
    # docker.io/library/amb:v1 must get that image, not the local one.
    local = sample_in_daemon("localhost/amb", "v1", seed=18)
    src = str(tmp_path / "hub.tar")
    hub = build_docker_archive(src, name="example.com/src/app", tag="v1", seed=19)
    process_ok(f"tar://{src}", docker_uri("docker.io/library/amb:v1"))
    for scheme in ("docker", "dockerpush"):
        for written, built in (("docker.io/library/amb:v1", hub),
                               ("index.docker.io/library/amb:v1", hub),
                               ("localhost/amb:v1", local),
                               ("amb:v1", local)):  # a short name: the daemon's resolution
            info = info_json(docker_uri(written, scheme))
            assert info["config_digest"] == built["config_digest"], (scheme, written)


def test_a_save_that_stalls_midway_ends_the_run(tmp_path, stalling_daemon, sample_in_daemon):
    """A daemon that stops sending in the middle of ``docker save`` ends the run after
    --timeout seconds of silence with one Error line naming it; nothing is left."""
    sample_in_daemon("stall/app", layer_size=64 * 1024)
    temp, out = tmp_path / "scratch", tmp_path / "o.tar"
    temp.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "occystrap", "--timeout", "1", "--temp-dir", str(temp),
         "process", f"docker://stall/app:v1?socket={stalling_daemon.socket}", f"tar://{out}"],
        capture_output=True, text=True, timeout=30)
    assert stalling_daemon.stalled.is_set()
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert f"the Docker daemon at unix://{stalling_daemon.socket} sent nothing for 1 " \
           "seconds (--timeout) in the middle of the save of" in lines[0]
    assert os.listdir(temp) == [] and not out.exists()
