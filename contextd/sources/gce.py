"""The GCE metadata server: the `user-data` instance attribute and the instance's facts.

Every request carries `Metadata-Flavor: Google` and every answer must carry it back (what
Google documents, and how cloud-init tells the real server from something else at that
name). User-data is base64-decoded when the attribute `user-data-encoding` says `base64` (as
cloud-init does). Facts: `instance/id`, `instance/image` (image_id), and `instance/zone`
(`projects/N/zones/europe-west1-b`) as region `europe-west1`. One budget (`gce.budget`)
through contextd.sources.metahttp; a 404 on the attribute is "no context".

What this module must never do: read an answer that does not say `Metadata-Flavor: Google`,
or ask for anything but these five paths.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from contextd.errors import SourceError
from contextd.limits import LIMITS
from contextd.patterns import Pattern
from contextd.sources import Context, userdata
from contextd.sources.metahttp import PER_ATTEMPT, Session, check_base

BASE = "/computeMetadata/v1/instance/"
USER_DATA_PATH = BASE + "attributes/user-data"
ENCODING_PATH = BASE + "attributes/user-data-encoding"   # "base64", as cloud-init reads it
FLAVOR = {"Metadata-Flavor": "Google"}
_FACT_RE = Pattern(r"[A-Za-z0-9._:/-]{1,255}\Z")


class _Gce(Session):
    def get(self, path: str, limit: int) -> Optional[bytes]:
        body = self.fetch(path, limit, FLAVOR)
        if self.headers.get("metadata-flavor") != "Google":
            raise SourceError("%s %s answered GET %s without Metadata-Flavor: Google"
                              % (self.name, self.url, path),
                              "that is not a GCE metadata server; check gce.url")
        return body

    def facts(self) -> Dict[str, Optional[str]]:
        out: Dict[str, Optional[str]] = {"cloud": "gce"}
        for name, leaf in (("instance_id", "id"), ("image_id", "image"), ("region", "zone")):
            body = self.get(BASE + leaf, LIMITS.ec2_fact_bytes)
            value = None if body is None else body.decode("ascii", "replace").strip()
            if value is not None and not _FACT_RE.match(value):
                raise SourceError("%s %s: instance/%s is not a plain identifier"
                                  % (self.name, self.url, leaf))
            if name == "region" and value:       # projects/N/zones/europe-west1-b
                value = value.rsplit("/", 1)[-1].rsplit("-", 1)[0]
            out[name] = value or None
        return out


def _base64(raw: bytes, url: str) -> bytes:
    import base64  # pylint: disable=import-outside-toplevel  (boot-time import cost)
    import binascii  # pylint: disable=import-outside-toplevel

    try:        # strict: what is not base64 is an error, not silently dropped
        return base64.b64decode(b"".join(raw.split()), validate=True)
    except binascii.Error:
        raise SourceError("GCE metadata %s: user-data is not valid base64, as its "
                          "user-data-encoding says" % url) from None


def look(url: str, budget: float,
         per_attempt: float = PER_ATTEMPT) -> Tuple[Optional[Context], str]:
    """(context, "") or (None, why there is none). Errors other than "no context" raise."""
    session = _Gce(check_base(url, "gce", "http://metadata.google.internal"), budget,
                   "GCE metadata", "list gce in the policy's sources only on GCE",
                   "the metadata server is too slow or failing; raise gce.budget or retry "
                   "the boot", per_attempt=per_attempt)
    raw = session.get(USER_DATA_PATH, userdata.MAX_USER_DATA)
    if raw is None:
        return None, "GCE metadata %s has no user-data attribute (HTTP 404)" % session.url
    encoding = session.get(ENCODING_PATH, 64)
    if encoding is not None and encoding.strip().lower() == b"base64":
        raw = _base64(raw, session.url)
    return userdata.context(raw, "gce", session.url, "GCE user-data from %s" % session.url,
                            facts=session.facts)
