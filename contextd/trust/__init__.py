"""Trust: the only way a payload's bytes become trusted (`verify`), and the two signature
formats it reads (`sshsig`: OpenSSH signatures and certificates; `x509sig`: grid robot
certificates against the site's CA directory). Verification only: making signatures is the
VO side's (`contextd.vo`), and nothing here is imported to sign.
"""
