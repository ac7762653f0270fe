"""Images on disk, in one place for every plugin: ``docker save`` archives
(``manifest.json``: legacy, Podman and Docker 25+ layouts) and OCI layouts
(``index.json`` + ``blobs/``), in a directory or a tar (:mod:`.stores`); reading one
image of a docker-save archive (:mod:`.docker_save`), writing an archive that is both
(:mod:`.output`, :mod:`.writer`), and verifying what was written (:mod:`.verify`)."""
