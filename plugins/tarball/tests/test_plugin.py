import subprocess
import sys


def test_plugin_module_imports_nothing_heavy():
    code = ("import sys, occystrap_tarball.plugin as p; "
            "heavy = [m for m in sys.modules if m.startswith('occystrap_tarball.') "
            "and m != 'occystrap_tarball.plugin'] + "
            "[m for m in ('tarfile', 'httpx', 'click') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_plugin_listed(run_cli):
    result = run_cli("plugins", "list")
    assert result.exit_code == 0
    block = result.stdout.split("occystrap-tarball (occystrap-tarball", 1)[1]
    assert "active" in block.splitlines()[0]
    assert "inputs: tar, oci-layout" in block
    assert "outputs: tar, oci-layout" in block
