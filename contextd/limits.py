"""Every size and count cap contextd applies, in one frozen record: `LIMITS`.

Hostile or broken input (a disc, user-data, a bundle, a CA directory, a spool file) must end
in bounded time and memory, so every read and every loop over input has a cap, checked
*before* the work. They live here, each with what it bounds and why that number, so a reviewer
sees them all at once and a site never meets a cap hidden in some module (python-tuf's
ngclient/config.py is the model). Values are in bytes unless the name says otherwise.

What this module must never do: import anything but `record` (every stage imports it, the
boot path included), or be mutated at run time: the record is frozen (a test that needs a
smaller cap gives a module a `Limits(...)` of its own).
"""

from __future__ import annotations

from contextd.record import record

_KIB = 1024
_MIB = 1024 * 1024


@record(frozen=True)
class Limits:
    # --- policy and payload ---------------------------------------------------------------
    policy_bytes: int = _MIB          # the site policy file; a real one is a few KiB
    bundle_bytes: int = _MIB          # a signed bundle, after gunzip: stops zip bombs
    bundle_certificates: int = 8      # certificates per X.509 signature: signer + intermediates
    yaml_depth: int = 64              # YAML nesting (contextd reads 4 levels): recursion safe
    yaml_int_chars: int = 100         # characters of a YAML integer; contextd's largest has 10
    # --- carriers (sources) ---------------------------------------------------------------
    user_data_bytes: int = _MIB       # user-data, raw and after gunzip: it holds a bundle
    user_data_listed_parts: int = 20  # ignored MIME parts the report lists; the rest are counted
    listed_file_bytes: int = 256 * _MIB  # one file a payload lists (`files:`), hashed while read
    context_sh_bytes: int = _MIB      # a HEPiX context.sh (KEY=value lines)
    script_bytes: int = _MIB          # one prolog/epilog or amiconfig script on a context disc
    iso_file_bytes: int = _MIB        # default per-file read from a context ISO
    iso_volume_descriptors: int = 64  # volume descriptors before the terminator; discs have 3-4
    iso_dir_records: int = 100000     # directory records per tree; a context ISO has a handful
    iso_dir_bytes: int = 64 * _MIB    # directory data read per tree; a context ISO has a few KiB
    iso_ce_per_record: int = 32       # chained Rock Ridge continuation areas per directory record
    iso_ce_areas: int = 16384         # Rock Ridge continuation areas per image, all records
    cloud_meta_bytes: int = 256 * _KIB  # a config drive's meta_data.json or NoCloud meta-data;
    #                                    Nova's holds keys and a 512-byte seed: a few KiB
    block_devices: int = 256          # block devices whose label detection reads (config-2,
    #                                    cidata) when udev has not named them; a VM has a few
    ec2_token_bytes: int = 4096       # an IMDSv2 session token (AWS issues ~56 characters)
    ec2_fact_bytes: int = _KIB        # one metadata fact (instance id, type, zone)
    mime_header_bytes: int = 8 * _KIB  # one MIME header field, continuation lines included
    mime_headers: int = 64            # header fields in one MIME part
    mime_params: int = 16             # parameters of one Content-Type or Content-Disposition
    mime_parts: int = 256             # MIME leaf parts in all
    mime_multiparts: int = 32         # multipart containers in all
    mime_depth: int = 8               # multipart containers inside containers
    mime_boundary: int = 70           # characters of a multipart boundary (RFC 2046)
    # --- trust ------------------------------------------------------------------------------
    rsa_bits: int = 16384             # largest RSA key (OpenSSH's own cap): bigger only costs CPU
    x509_chain_depth: int = 8         # certificates from signer to anchor
    ca_file_bytes: int = _MIB         # one file in the CA directory (a CA or a CRL)
    ca_files: int = 5000              # files read from the CA directory; IGTF has a few hundred
    # --- applying and the state -----------------------------------------------------------
    symlinks: int = 40                # symlinks followed in one path: Linux's own limit (ELOOP)
    journal_bytes: int = _MIB         # the apply journal read back on recovery (KiBs per action)
    backup_bytes: int = 64 * _MIB     # a file read to back it up before apply replaces it
    state_bytes: int = 64 * _KIB      # a state file read back (history: what was applied, when)
    shown_output_bytes: int = 2048    # a HEPiX script's output that goes to the log
    # --- image identity (DESIGN section 11) -----------------------------------------------
    image_manifest_bytes: int = 64 * _KIB   # image.json: ~600 bytes; it goes into every report
    image_signature_bytes: int = 16 * _KIB  # image.json.sig: an RSA-16384 SSHSIG is ~3 KiB
    image_package_list_bytes: int = 256 * _MIB  # `rpm -qa` output or dpkg's status file
    cmdline_bytes: int = 64 * _KIB    # /proc/cmdline read for contextd=off; Linux caps it lower
    # --- reports ----------------------------------------------------------------------------
    report_key_bytes: int = 4096      # the site's report.hmac_key_file
    spool_entry_bytes: int = 8 * _MIB  # one spooled report: reports are KiBs, more is broken
    # --- plugins ----------------------------------------------------------------------------
    htcondor_token_bytes: int = 16 * _KIB  # an HTCondor IDTOKEN a payload ships (a JWT: ~1 KiB)
    cvmfs_proxy_chars: int = 2048     # the CVMFS_HTTP_PROXY value a payload sets
    puppet_waitforcert_seconds: int = 86400  # largest waitforcert a payload may set: one day
    file_entries: int = 256           # files one payload installs (`files` plugin)
    file_bytes: int = 16 * _MIB       # one installed file, whatever allow.files.max_bytes says
    template_bytes: int = 256 * _KIB  # one template's source; a config template has a few KiB
    template_seconds: int = 5         # wall time to render one template; real ones take ms
    template_memory_bytes: int = 256 * _MIB  # address space a render may add: stops string bombs
    template_bits: int = 4096         # bits of an integer `**` may make in a template
    package_names: int = 100          # packages one payload installs (`packages` plugin)
    package_seconds: int = 1800       # one package manager command: a slow mirror, not a hang
    # --- contextd-collector (DESIGN section 12) -------------------------------------------
    collector_report_bytes: int = _MIB    # a POSTed report (413 above): a real one is a few KiB
    collector_secret_file_bytes: int = 64 * _KIB  # a tokens/readers/key file the config names
    collector_clock_skew_seconds: int = 300  # a report's X-Contextd-Timestamp from our clock
    collector_page_rows: int = 500        # rows per JSON listing and per table of the page
    # --- VO side ----------------------------------------------------------------------------
    ec2_user_data_bytes: int = 16 * _KIB  # what EC2 accepts as user-data: larger would be refused


LIMITS = Limits()
