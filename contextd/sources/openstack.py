"""The Nova metadata service: `/openstack/latest/user_data` and `meta_data.json`, no token.

Nova answers the IMDSv2 token PUT with 404, so the `ec2` source works on OpenStack only with
IMDSv1 and reports EC2 ids; this source reads Nova's own API instead: the instance id is
`uuid`, the zone `availability_zone` (contextd.sources.clouddisc reads both, as it does on a
config drive). One budget (`openstack.budget`) bounds it all, through contextd.sources.metahttp.
A 404 on user_data is "no context".

What this module must never do: send anything but GETs, or read the metadata (keys, `meta`)
into a message or the report beyond the facts.
"""

from __future__ import annotations

from typing import Optional, Tuple

from contextd.errors import SourceError
from contextd.sources import Context, clouddisc, userdata
from contextd.sources.metahttp import PER_ATTEMPT, Session, check_base

USER_DATA_PATH = "/openstack/latest/user_data"
META_PATH = "/openstack/latest/meta_data.json"


def look(url: str, budget: float,
         per_attempt: float = PER_ATTEMPT) -> Tuple[Optional[Context], str]:
    """(context, "") or (None, why there is none). Errors other than "no context" raise."""
    session = Session(check_base(url, "openstack", "http://169.254.169.254"), budget,
                      "OpenStack metadata",
                      "list openstack in the policy's sources only on OpenStack clouds",
                      "the metadata service is too slow or failing; raise openstack.budget "
                      "or retry the boot", per_attempt=per_attempt)
    raw = session.fetch(USER_DATA_PATH, userdata.MAX_USER_DATA)
    if raw is None:
        return None, "OpenStack metadata %s has no user_data (HTTP 404)" % session.url

    def facts() -> dict:
        meta = session.fetch(META_PATH, clouddisc.MAX_META)
        if meta is None:
            raise SourceError("OpenStack metadata %s has no %s (HTTP 404)"
                              % (session.url, META_PATH), "is this a Nova metadata service?")
        return clouddisc.openstack_facts(meta, "%s%s" % (session.url, META_PATH))

    return userdata.context(raw, "openstack", session.url,
                            "OpenStack user_data from %s" % session.url, facts=facts)
