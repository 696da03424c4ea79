"""DICOM over TLS (PS3.15 Annex B, BCP 195): the receiver's ``ssl`` context from the settings.

The TLS listener is a second port (``tls_port``, 2762 by convention) beside the plain one, so
modalities that cannot do TLS keep working while workstations outside the hospital's network
use TLS. With ``tls_ca_certificates`` set, a peer must present a certificate signed by one of
those authorities (mutual TLS, as the DICOM TLS profiles expect); without it, any peer may
connect and the AE rules of the ``access`` setting still apply.
"""

from __future__ import annotations

import ssl

from pacs.config import Settings, SettingsError


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the receiver, or None when ``tls_port`` is 0.

    Raises
    ------
    SettingsError
        If a certificate, key or CA file cannot be loaded; the message names the setting.
    """
    if not settings.tls_port:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # BCP 195
    try:
        context.load_cert_chain(str(settings.tls_certificate), str(settings.tls_private_key))
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"tls_certificate/tls_private_key: cannot load {settings.tls_certificate} and "
            f"{settings.tls_private_key}: {exc}"
        ) from None
    if settings.tls_ca_certificates is not None:
        try:
            context.load_verify_locations(cafile=str(settings.tls_ca_certificates))
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(
                f"tls_ca_certificates: cannot load {settings.tls_ca_certificates}: {exc}"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context
