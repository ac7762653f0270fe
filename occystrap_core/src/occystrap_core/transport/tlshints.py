"""What a TLS or scheme mismatch means, and what to try: hints for the error line.

A certificate that does not verify, or TLS spoken to a plain-HTTP server, fails the
same way however often it is tried, so the retry layer gives up at once on them
(:func:`tls_failure`). The reverse mistake, plain HTTP sent to an HTTPS server,
comes back as an answer (Go servers say so in a 400), read by :func:`http_to_https`.
"""

from __future__ import annotations

import ssl

import httpx

CERTIFICATE = ("the registry's certificate is not trusted: give its CA with --ca-cert FILE, "
               "or skip verification with --tls-verify=false or ?tls_verify=false")
# --ca-cert cannot cure this one: the certificate verifies, for other names
NAME = ("the registry's certificate was issued for other names: reach it by one of them, "
        "or skip verification with --tls-verify=false or ?tls_verify=false")
# nor this one: the certificate is out of its validity dates (or the clock is wrong)
DATES = ("the registry's certificate is out of its validity dates (expired, or not yet "
         "valid: is this machine's clock right?); or skip verification with "
         "--tls-verify=false or ?tls_verify=false")
PLAIN_HTTP = "is it a plain-HTTP registry? then use --insecure or ?insecure=true"
HTTPS = "is it an HTTPS registry? then drop --insecure and ?insecure=true"
CLIENT_CERT = ("the registry wants a client certificate: give it with --client-cert and "
               "--client-key, or as NAME.cert and NAME.key in its certs.d directory")
OTHER_TLS = "the TLS handshake failed; retrying would not help"
# OpenSSL's reasons for TLS spoken to something that is not a TLS server
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST",
            "PACKET_LENGTH_TOO_LONG")
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH, as codes
# and as their text ("Hostname mismatch, certificate is not valid for 'NAME'")
_NAME_CODES = (62, 64)
_NAME_TEXTS = ("HOSTNAME_MISMATCH", "IP_ADDRESS_MISMATCH")
# X509_V_ERR_CERT_NOT_YET_VALID and X509_V_ERR_CERT_HAS_EXPIRED
_DATE_CODES = (9, 10)
_DATE_TEXTS = ("CERTIFICATE_HAS_EXPIRED", "CERTIFICATE_IS_NOT_YET_VALID")
# ssl errors that a retry may cure: the connection dropped during the handshake
_TRANSIENT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError,
              ssl.SSLWantReadError, ssl.SSLWantWriteError)
# what Go's net/http answers plain HTTP sent to its TLS port with
_GO_HTTP_TO_HTTPS = b"client sent an http request to an https server"


def _ssl_error(error: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind ``error`` (httpx and httpcore chain it as the cause)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _verify_hint(code: int | None, text: str) -> str:
    """The hint for a certificate that does not verify, by OpenSSL's code or text."""
    if code in _NAME_CODES or any(t in text for t in _NAME_TEXTS):
        return NAME
    if code in _DATE_CODES or any(t in text for t in _DATE_TEXTS):
        return DATES
    return CERTIFICATE


def tls_failure(error: BaseException) -> str | None:
    """The hint for a TLS failure no retry can cure (an untrusted certificate, TLS to a
    plain-HTTP server, no common protocol version), or None for anything else."""
    found = _ssl_error(error)
    if found is None:
        if not isinstance(error, httpx.ConnectError):
            return None
        text = str(error).upper().replace(" ", "_")  # the chain may be gone: read the text
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return _verify_hint(None, text)
        return PLAIN_HTTP if any(reason in text for reason in _NOT_TLS) else None
    if isinstance(found, ssl.SSLCertVerificationError):
        return _verify_hint(getattr(found, "verify_code", None), "")
    if isinstance(found, _TRANSIENT):
        return None
    reason = (getattr(found, "reason", None) or str(found)).upper().replace(" ", "_")
    if any(r in reason for r in _NOT_TLS):
        return PLAIN_HTTP
    if "CERTIFICATE_REQUIRED" in reason:  # TLS 1.3's alert: no client certificate sent
        return CLIENT_CERT
    return OTHER_TLS


def http_to_https(status: int, content: bytes) -> bool:
    """Is this the answer of an HTTPS server to a plain-HTTP request?"""
    return status == 400 and _GO_HTTP_TO_HTTPS in content[:200].lower()
