"""What a share link's session, or a clinician limited to some institutions, may reach.

Called by :func:`pacs.web.auth.authorise` (never by routes) for requests that passed the
role check:

* a share link reaches its study (or its series) and nothing else: the UIDs of the path and
  of WADO-URI's parameters must be the link's, and QIDO searches are narrowed to the link's
  study (and series) by rewriting their parameters, so no route has to remember the link.
  For a de-identified link the UIDs the viewer sends are the link's remapped ones; they are
  translated back here, and :mod:`pacs.web.deidentified` de-identifies the answer;
* a clinician limited to some institutions reaches the studies whose Institution Name is
  one of theirs: paths are checked here, and QIDO passes :func:`visible_institutions` to the
  query model, which adds the condition to its one SELECT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Response, current_app, g, request

from pacs.sharing import ShareLink
from pacs.web.auth import Rule, replace_args
from pacs.web.errors import error_response

if TYPE_CHECKING:
    from pacs.web.deidentified import DeidentifiedView

#: Query keys that name a study or series, by keyword and by tag.
_STUDY_KEYS = ("StudyInstanceUID", "0020000D")
_SERIES_KEYS = ("SeriesInstanceUID", "0020000E")
_INSTANCE_KEYS = ("SOPInstanceUID", "00080018")
_UID_KEYS = frozenset(_STUDY_KEYS + _SERIES_KEYS + _INSTANCE_KEYS)
#: QIDO-RS parameters that are options of the search, not attributes to match.
_QIDO_OPTIONS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
_WADO_URI_KEYS = {"studyUID": "study", "seriesUID": "series", "objectUID": "instance"}
#: Studies whose patient and institution each web process remembers.
STUDY_FACTS_CACHED = 4096
#: Endpoints of a whole study (not one series), refused to a link for one series.
_STUDY_WIDE = {"wado.retrieve_study", "wado.study_metadata", "rendered.rendered_study",
               "rendered.study_thumbnail"}


def scope_to_share(link: ShareLink, rule: Rule) -> Response | None:
    """Refuse what lies outside ``link``'s study or series; None lets the request on."""
    if rule is not Rule.READ:
        return None
    view = None
    if link.deidentify:
        from pacs.web.deidentified import DeidentifiedView

        view = DeidentifiedView.for_link(link)
        g.deidentified = view
    endpoint = request.endpoint or ""
    args = request.view_args if request.view_args is not None else {}
    for name in ("study", "series", "instance"):
        if name in args and view is not None:
            args[name] = view.original(args[name])
    if endpoint == "wado_uri.wado":
        return _scope_wado_uri(link, view)
    if "study" in args and args["study"] != link.study_uid:
        return _outside(link)
    if link.series_uid is not None:
        if "series" in args and args["series"] != link.series_uid:
            return _outside(link)
        if endpoint in _STUDY_WIDE:
            return error_response(403, "this share link covers one series, not the study")
    if endpoint.startswith("qido."):
        return _scope_search(link, view, endpoint)
    if view is not None:
        return view.check_pixels(endpoint, args)
    return None


def scope_to_institutions(institutions: tuple[str, ...]) -> Response | None:
    """Refuse a study outside ``institutions`` (QIDO is narrowed by the query itself)."""
    args = request.view_args or {}
    study_uid = args.get("study") or request.args.get("studyUID")
    if study_uid is None:
        return None
    _patient_id, institution = study_facts(study_uid)
    if institution not in institutions:
        return error_response(403, "this study belongs to an institution you cannot read")
    return None


def visible_institutions() -> tuple[str, ...] | None:
    """The institutions the requester is limited to, or None for all."""
    from pacs.web.auth import principal

    who = principal()
    if who.user is not None and who.user.institutions:
        return who.user.institutions
    return None


def study_facts(study_uid: str) -> tuple[str | None, str | None]:
    """The patient ID and institution name of an indexed study (``(None, None)`` when the
    study is unknown); cached per application, as both are set by the study's first
    instance."""
    from pacs.web import services_of

    cache: dict[str, tuple[str | None, str | None]] = current_app.extensions.setdefault(
        "pacs_study_facts", {})
    found = cache.get(study_uid)
    if found is None:
        looked_up = services_of(current_app).index.study_owner(study_uid)
        if looked_up is None:
            return None, None  # not cached: the study may arrive later
        if len(cache) >= STUDY_FACTS_CACHED:
            cache.clear()
        found = cache[study_uid] = looked_up
    return found


def _scope_search(link: ShareLink, view: DeidentifiedView | None,
                  endpoint: str) -> Response | None:
    params = request.args.to_dict(flat=False)
    if view is not None:
        # The viewer only knows the de-identified values (a pseudonymous PatientID...), which
        # match nothing stored: keep the UID keys (translated back) and the query's options;
        # the link's study restricts the search anyway.
        params = {key: values for key, values in params.items()
                  if key in _UID_KEYS or key in _QIDO_OPTIONS}
    for keys, allowed in ((_STUDY_KEYS, link.study_uid), (_SERIES_KEYS, link.series_uid),
                          (_INSTANCE_KEYS, None)):
        for key in keys:
            if key not in params:
                continue
            uids = [view.original(value) if view is not None else value
                    for value in params[key]]
            if allowed is not None and any(uid != allowed for uid in uids):
                return _outside(link)
            params[key] = uids
    args = request.view_args or {}
    if "study" not in args:
        _force(params, _STUDY_KEYS, link.study_uid)
    at_series_or_below = endpoint != "qido.search_for_studies"
    if link.series_uid is not None and at_series_or_below and "series" not in args:
        _force(params, _SERIES_KEYS, link.series_uid)
    replace_args(params)
    return None


def _force(params: dict[str, list[str]], keys: tuple[str, str], uid: str) -> None:
    """Match ``uid`` on the attribute ``keys`` name (by keyword, whatever the client used)."""
    for key in keys:
        params.pop(key, None)
    params[keys[0]] = [uid]


def _scope_wado_uri(link: ShareLink, view: DeidentifiedView | None) -> Response | None:
    params = request.args.to_dict(flat=False)
    uids = {}
    for key, name in _WADO_URI_KEYS.items():
        values = params.get(key)
        if values:
            original = view.original(values[0]) if view is not None else values[0]
            params[key] = [original]
            uids[name] = original
    if uids.get("study") != link.study_uid:
        return _outside(link)
    if link.series_uid is not None and uids.get("series") != link.series_uid:
        return _outside(link)
    replace_args(params)
    if view is not None:
        return view.check_pixels("wado_uri.wado", uids)
    return None


def _outside(link: ShareLink) -> Response:
    what = "series" if link.series_uid is not None else "study"
    return error_response(403, f"this share link gives access to one {what} only")
