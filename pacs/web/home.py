"""The landing page at ``/``: the archive's name, the way into the viewer, and its state.

It shows counts and sizes only (studies, instances, bytes archived, free space where the
store is a folder), never a patient's name; who is signed in, with links to the share and
admin pages for those who may use them, and a sign-out button. A share link's session is
sent to its study in the viewer instead. The figures are read at most once a minute per
worker: summing the sizes of tens of millions of instances is a scan of the index, not
something to do on every page view.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, redirect, render_template_string

from pacs.config import Settings
from pacs.viewer import is_installed

blueprint = Blueprint("home", __name__)
STATUS_SECONDS = 60.0


@dataclass(frozen=True)
class ArchiveStatus:
    """What the landing page tells about the archive."""

    studies: int
    instances: int
    archived_bytes: int
    free_bytes: int | None
    """Free space on the object store's disk; None when the store is S3."""


_lock = threading.Lock()

_PAGE = """<!doctype html>
<html lang="vi">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ name }}</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #0b1a2b; color: #e8eef5; }
  main { max-width: 44rem; margin: 4rem auto; padding: 0 1.5rem; }
  h1 { font-weight: 600; margin-bottom: .25rem; }
  p.lead { color: #9fb3c8; margin-top: 0; }
  a.open { display: inline-block; margin: 1.5rem 0; padding: .8rem 1.4rem; border-radius: .4rem;
           background: #3b82f6; color: white; text-decoration: none; font-size: 1.1rem; }
  dl { display: grid; grid-template-columns: max-content auto; gap: .4rem 1.5rem; }
  dt { color: #9fb3c8; } dd { margin: 0; font-variant-numeric: tabular-nums; }
  .warn { color: #fbbf24; }
  footer { margin-top: 3rem; color: #6b829a; font-size: .9rem; }
  footer a { color: #9fb3c8; }
  form.who { color: #9fb3c8; margin-top: 2rem; }
  form.who a { color: #9fb3c8; }
  form.who button { background: none; border: 0; color: #9fb3c8; text-decoration: underline;
                    cursor: pointer; font: inherit; padding: 0; }
</style>
</head>
<body>
<main>
  <h1>{{ name }}</h1>
  <p class="lead">Lưu trữ và truyền hình ảnh y tế &middot; DICOM image archive</p>
  {% if viewer %}
  <a class="open" href="/viewer/">Mở trình xem ảnh &middot; Open the viewer</a>
  {% else %}
  <p class="warn">The viewer is not installed: run <code>pacs viewer install</code>.</p>
  {% endif %}
  <dl>
    <dt>Ca chụp &middot; Studies</dt><dd id="studies">{{ "{:,}".format(status.studies) }}</dd>
    <dt>Ảnh &middot; Instances</dt><dd id="instances">{{ "{:,}".format(status.instances) }}</dd>
    <dt>Dung lượng &middot; Stored</dt><dd id="stored">{{ size(status.archived_bytes) }}</dd>
    {% if status.free_bytes is not none %}
    <dt>Còn trống &middot; Free</dt><dd id="free">{{ size(status.free_bytes) }}</dd>
    {% endif %}
  </dl>
  <form method="post" action="/logout" class="who">
    <input type="hidden" name="csrf_token" value="{{ csrf }}">
    {{ user }} ({{ role }})
    {% if role in ("admin", "radiologist") %}
    &middot; <a href="/shares">Chia sẻ &middot; Share</a>{% endif %}
    {% if role == "admin" %}&middot; <a href="/admin">Quản trị &middot; Admin</a>{% endif %}
    &middot; <button type="submit">Đăng xuất &middot; Sign out</button>
  </form>
  <footer>DICOMweb: <a href="/dicom-web/studies?limit=1">/dicom-web</a> &middot;
    DICOM: AE title {{ aet }}, port {{ dicom_port }} &middot;
    <a href="/readyz">/readyz</a></footer>
</main>
</body>
</html>
"""


@blueprint.get("/")
def home() -> Response:
    """The landing page (a share link's session goes to its study instead)."""
    from pacs.web.auth import principal
    from pacs.web.login import viewer_url

    who = principal()
    if who.share is not None:
        return redirect(viewer_url(who.share))
    settings: Settings = current_app.config["PACS_SETTINGS"]
    page = render_template_string(
        _PAGE, name=settings.archive_name, viewer=bool(settings.viewer_url)
        or is_installed(settings.viewer_dir), status=archive_status(), size=human_size,
        aet=settings.aet, dicom_port=settings.dicom_port, user=who.name,
        role=who.user.role if who.user is not None else "", csrf=who.csrf_token or "")
    response = Response(page, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    return response


def archive_status() -> ArchiveStatus:
    """The archive's counts and sizes, read at most once per :data:`STATUS_SECONDS`."""
    from pacs.web import services_of

    with _lock:
        cached: tuple[float, ArchiveStatus] | None = current_app.extensions.get("pacs.status")
        if cached is not None and time.monotonic() - cached[0] < STATUS_SECONDS:
            return cached[1]
        services = services_of(current_app)
        studies, instances, archived = services.index.totals()
        settings: Settings = current_app.config["PACS_SETTINGS"]
        free = (shutil.disk_usage(settings.objects_path).free
                if settings.object_store == "filesystem" and settings.objects_path.exists()
                else None)
        status = ArchiveStatus(studies, instances, archived, free)
        current_app.extensions["pacs.status"] = (time.monotonic(), status)
        return status


def human_size(count: int) -> str:
    """``1536`` -> ``1.5 KB``: decimal units, as disks are sold."""
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
