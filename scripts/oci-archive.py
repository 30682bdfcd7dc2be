#!/usr/bin/env python3
"""Rewrites a `docker save` archive as an OCI image layout that both `docker load` and
`ctr images import` take: oci-layout, index.json (the image named by
io.containerd.image.name and org.opencontainers.image.ref.name), the config, manifest and
layers under blobs/sha256/, and a docker manifest.json pointing at the same blobs (what Docker 25
and later write themselves; an archive that already has index.json is copied as it is).

    python3 scripts/oci-archive.py DOCKER_SAVE.tar OUT.tar REFERENCE

Entries are written in a fixed order with mtime 0, so the same image gives the same archive."""

import hashlib
import io
import json
import shutil
import sys
import tarfile


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    src, dst, ref = sys.argv[1:]
    with tarfile.open(src) as t:
        names = t.getnames()
        if "index.json" in names:
            shutil.copyfile(src, dst)
            return
        read = lambda name: t.extractfile(name).read()
        saved = json.loads(read("manifest.json"))
        if len(saved) != 1:
            sys.exit(f"oci-archive: {src} holds {len(saved)} images; save one")
        config = read(saved[0]["Config"])
        layers = [read(name) for name in saved[0]["Layers"]]
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    if [blob(layer) for layer in layers] != diff_ids:
        sys.exit(f"oci-archive: the layers of {src} do not match its config's diff_ids")
    files = {}
    files[f"blobs/sha256/{blob(config)[7:]}"] = config
    for layer in layers:
        files[f"blobs/sha256/{blob(layer)[7:]}"] = layer
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob(layer), "size": len(layer)} for layer in layers],
    }, separators=(",", ":")).encode()
    files[f"blobs/sha256/{blob(manifest)[7:]}"] = manifest
    tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob(manifest), "size": len(manifest),
                       "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": tag}}],
    }
    files["index.json"] = json.dumps(index, indent=1).encode()
    files["oci-layout"] = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
    files["manifest.json"] = json.dumps([{"Config": f"blobs/sha256/{blob(config)[7:]}", "RepoTags": [ref],
                                          "Layers": [f"blobs/sha256/{blob(layer)[7:]}" for layer in layers]}]).encode()
    with tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as out:
        for directory in ["blobs", "blobs/sha256"]:
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            out.addfile(info)
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            out.addfile(info, io.BytesIO(files[name]))
    print(f"oci-archive: {dst}: {ref} manifest {blob(manifest)}")


if __name__ == "__main__":
    main()
