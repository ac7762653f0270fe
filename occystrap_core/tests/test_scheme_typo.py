"""A typo in a scheme or filter name suggests the nearest installed one."""

from __future__ import annotations

from typing import Any

import pytest

from occystrap_core.testing.images import build_docker_archive


@pytest.mark.parametrize("args, hint", [
    (("info", "regsitry://example.com/app:1"), "did you mean 'registry://'?"),
    (("info", "TAR://x.tar"), None),  # schemes are case-insensitive: no typo
    (("process", "{tar}", "oci-layuot://{tmp}/out"), "did you mean 'oci-layout://'?"),
    (("process", "{tar}", "tar://{tmp}/out.tar", "-f", "normalise-timestamps"),
     "did you mean 'normalize-timestamps'?"),
    (("info", "zzz://x"), "(available: "),
])
def test_a_scheme_typo_suggests_the_nearest(tmp_path: Any, run_cli: Any, expect_error: Any,
                                            args: tuple[str, ...], hint: str | None) -> None:
    archive = build_docker_archive(str(tmp_path / "a.tar"))["path"]
    filled = [a.format(tar=f"tar://{archive}", tmp=tmp_path) for a in args]
    result = run_cli(*filled)
    if hint is None:
        assert "does not exist" in result.stderr and "did you mean" not in result.stderr
        return
    expect_error(result, hint)
    assert "did you mean" not in result.stderr or hint.startswith("did you mean")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar"]  # nothing written
