"""A context ISO image file or CD-ROM device, read by contextd.iso, never mounted.

Three layouts, recognised by content, all read here:

- the contextd directory carrier: `contextd/payload.yaml` + `contextd/payload.yaml.sig`;
- the HEPiX / OpenNebula layout: `context.sh` (parsed as data by `contextsh`) whose
  `EC2_USER_DATA` or `USER_DATA`/`USERDATA` carries the bundle (or legacy amiconfig INI),
  plus the site's `prolog.sh`/`epilog.sh`, handed on as bytes for `contextd.legacy`;
- the clouds' own discs, OpenStack's config drive and a NoCloud seed (`clouddisc`).

The directory carrier wins over the others, a cloud disc over `context.sh`. Every read is
bounded. This module never executes, sources or mounts anything it finds.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from contextd import bundle, iso
from contextd.errors import SourceError
from contextd.limits import LIMITS
from contextd.sources import MAX_LISTED_FILE, Context

PAYLOAD = "contextd/payload.yaml"
SIGNATURES = "contextd/payload.yaml.sig"
CONTEXT_SH = "context.sh"
SCRIPTS = ("prolog.sh", "epilog.sh")
MAX_CONTEXT_SH = LIMITS.context_sh_bytes  # contextd/limits.py says why
MAX_SCRIPT = LIMITS.script_bytes  # contextd/limits.py says why
LABEL = "CONTEXT"


def read(path: str, kind: str = "iso") -> Context:
    """The context on the image at `path`; SourceError when it holds none."""
    from contextd.sources import clouddisc
    if clouddisc.is_fat(path):                  # a vfat config drive or NoCloud seed
        ctx, why = clouddisc.read_disc(path, kind)
        if ctx is None:
            raise SourceError(why, "contextd reads a vfat disc only as a config drive or seed")
        return ctx
    with iso.IsoImage(path) as image:
        ctx, why = from_image(image, path, kind)
    if ctx is None:
        raise SourceError(why, "build it with contextd pack iso BUNDLE -o FILE")
    return ctx


def is_context_disc(image: iso.IsoImage) -> bool:
    """HEPiX / OpenNebula convention: label CONTEXT, or any label with context.sh or contextd/."""
    return image.label.upper() == LABEL or image.exists(CONTEXT_SH) or image.exists("contextd")


def from_image(image: iso.IsoImage, path: str, kind: str) -> Tuple[Optional[Context], str]:
    """(context, "") or (None, why there is none) for an opened image."""
    if not image.exists("contextd"):
        from contextd.sources import clouddisc
        disc = clouddisc.layout(image, image.label)
        if disc is not None:                    # OpenStack config-2, NoCloud cidata
            return clouddisc.from_tree(image, disc, path, kind)
    scripts = {name: image.read(name, limit=MAX_SCRIPT) for name in SCRIPTS
               if image.exists(name)}
    variables: Dict[str, str] = {}
    facts: Dict[str, Optional[str]] = {}
    has_context_sh = image.exists(CONTEXT_SH)
    if has_context_sh:
        from contextd.sources import contextsh   # boot-time import cost: only with a context.sh

        raw = image.read(CONTEXT_SH, limit=MAX_CONTEXT_SH)
        variables = contextsh.parse(raw, what="%s on %s" % (CONTEXT_SH, path))
        facts = contextsh.facts(variables, raw)

    def open_file(rel: str) -> bytes:
        with iso.IsoImage(path) as again:
            if not again.exists(rel):
                raise SourceError("payload lists %r but it is not on %s" % (rel, path))
            return again.read(rel, limit=MAX_LISTED_FILE)

    def hash_file(rel: str) -> str:
        with iso.IsoImage(path) as again:
            if not again.exists(rel):
                raise SourceError("payload lists %r but it is not on %s" % (rel, path))
            return again.sha256(rel, limit=MAX_LISTED_FILE)

    if image.exists("contextd") or not has_context_sh:
        if not image.exists(PAYLOAD):
            return None, "context ISO %s has no %s" % (path, PAYLOAD)
        if not image.exists(SIGNATURES):
            raise SourceError("context ISO %s has no %s (unsigned?)" % (path, SIGNATURES),
                              "sign the payload and pack the bundle again")
        payload = image.read(PAYLOAD, limit=bundle.MAX_BUNDLE)
        sigs = bundle.decode_signatures(image.read(SIGNATURES, limit=bundle.MAX_BUNDLE),
                                        what="%s on %s" % (SIGNATURES, path))
        return Context(kind=kind, location=path, payload=payload, signatures=sigs,
                       facts=facts, open_file=open_file, hash_file=hash_file,
                       scripts=scripts), ""

    from contextd.sources import contextsh, userdata

    found = contextsh.user_data(variables, what="%s on %s" % (CONTEXT_SH, path))
    if found is None:
        return None, ("context ISO %s has no %s, and its %s sets none of %s"
                      % (path, PAYLOAD, CONTEXT_SH, ", ".join(contextsh.USER_DATA_VARS)))
    name, data = found
    ctx, why = userdata.context(data, kind, path, "%s in %s on %s" % (name, CONTEXT_SH, path),
                                facts=facts, details={"variable": name}, scripts=scripts,
                                open_file=open_file, hash_file=hash_file)
    return ctx, why
