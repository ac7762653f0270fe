import contextlib
import hashlib
import io
import json
import tarfile

from occystrap_core import mediatypes
from occystrap_core.api import Image, ImageInput, Layer


def _layer(name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = f"hello from {name}\n".encode()
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class DummyInput(ImageInput):
    def __init__(self, name: str):
        self.name = name
        self.tar = _layer(name)

    def image(self) -> Image:
        digest = "sha256:" + hashlib.sha256(self.tar).hexdigest()
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "config": {"Cmd": ["cat", "/hello.txt"]},
                             "rootfs": {"type": "layers", "diff_ids": [digest]},
                             "history": [{"created_by": "dummy"}]}).encode()
        layer = Layer(0, mediatypes.DOCKER_LAYER_TAR, digest, len(self.tar), digest)
        return Image(f"dummy.example/{self.name}", "latest", config, (layer,),
                     config_media_type=mediatypes.DOCKER_CONFIG)

    def open_layer(self, layer):
        return contextlib.nullcontext(io.BytesIO(self.tar))
