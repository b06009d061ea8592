"""A context ISO image file or CD-ROM device, read with pycdlib, never mounted.

Carries the directory layout (`contextd/payload.yaml` + `.sig`). Every read is bounded.
"""

from contextd import bundle, iso
from contextd.errors import SourceError
from contextd.sources import MAX_LISTED_FILE, Context

PAYLOAD = "contextd/payload.yaml"
SIGNATURES = "contextd/payload.yaml.sig"


def read(path: str, kind: str = "iso") -> Context:
    with iso.IsoImage(path) as image:
        if not image.exists(PAYLOAD):
            raise SourceError("context ISO %s has no %s" % (path, PAYLOAD),
                              "build it with contextd pack iso BUNDLE -o FILE")
        if not image.exists(SIGNATURES):
            raise SourceError("context ISO %s has no %s (unsigned?)" % (path, SIGNATURES),
                              "sign the payload and pack the bundle again")
        payload = image.read(PAYLOAD, limit=bundle.MAX_BUNDLE)
        sigs = bundle.decode_signatures(image.read(SIGNATURES, limit=bundle.MAX_BUNDLE),
                                        what="%s on %s" % (SIGNATURES, path))

    def open_file(rel: str) -> bytes:
        with iso.IsoImage(path) as again:
            if not again.exists(rel):
                raise SourceError("payload lists %r but it is not on %s" % (rel, path))
            return again.read(rel, limit=MAX_LISTED_FILE)

    return Context(kind=kind, location=path, payload=payload, signatures=sigs,
                   open_file=open_file)
