"""The admin page (``/admin``) and the share-link page (``/shares``), as self-contained HTML.

Both pages are thin clients of the JSON APIs in :mod:`pacs.web.admin` and
:mod:`pacs.web.shares` (and of QIDO-RS to find a study): the server renders only the archive
name, the signed-in user and the CSRF token; everything else is fetched by inline JavaScript.
Nothing is loaded from another origin (no CDN, no web fonts), so the pages work on a hospital
network cut off from the internet.

Patient and user names are untrusted, so the scripts put API data into the page only through
``textContent``, ``value`` and ``dataset``, never ``innerHTML``. The three server-side values
go through Jinja's autoescaping; a private :class:`jinja2.Environment` is used instead of
Flask's ``render_template_string`` so that the pages render without an app context (tests,
tools) and share one base template.
"""

from __future__ import annotations

from flask import Response, current_app
from jinja2 import DictLoader, Environment

from pacs.accounts import ROLES, SCOPES
from pacs.audit import Action

_BASE = """<!doctype html>
<html lang="vi">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{{ csrf_token }}">
<meta name="referrer" content="no-referrer">
<title>{% block title %}{% endblock %} · {{ archive_name }}</title>
<style>{% raw %}
  body { font-family: system-ui, sans-serif; margin: 0; background: #0b1a2b; color: #e8eef5; }
  header { display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; padding: .8rem 1.5rem;
           background: #0f2236; border-bottom: 1px solid #33506e; } header form { margin: 0; }
  header strong { font-size: 1.15rem; } header .who { margin-left: auto; color: #9fb3c8; }
  header nav a { color: #9fb3c8; margin-right: .8rem; } a { color: #93c5fd; }
  main { max-width: 78rem; margin: 0 auto; padding: 1rem 1.5rem 4rem; }
  section { margin: 1.5rem 0; padding: 1rem 1.2rem; border: 1px solid #1e3a56;
            border-radius: .5rem; background: #0d1f33; }
  h2 { margin: 0 0 .8rem; font-size: 1.2rem; } button.danger { background: #b91c1c; }
  form.row { display: flex; flex-wrap: wrap; gap: .6rem 1rem; align-items: flex-end; }
  label { display: flex; flex-direction: column; gap: .25rem; color: #9fb3c8; font-size: .9rem; }
  label.check { flex-direction: row; align-items: center; }
  input, select { padding: .45rem; border-radius: .3rem; border: 1px solid #33506e;
                  background: #0f2236; color: #e8eef5; font-size: .95rem; }
  button { padding: .45rem 1rem; border: 0; border-radius: .3rem; background: #3b82f6;
           color: white; font-size: .95rem; cursor: pointer; }
  button.small { padding: .2rem .6rem; font-size: .85rem; margin: .1rem; background: #33506e; }
  .hint { color: #9fb3c8; font-size: .85rem; } .ok { color: #86efac; }
  .error { color: #fca5a5; margin: .5rem 0; white-space: pre-wrap; }
  .scroll { overflow-x: auto; margin-top: .8rem; } th { color: #9fb3c8; }
  table { border-collapse: collapse; width: 100%; font-size: .88rem; }
  th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #1e3a56; }
  td.uid { font-family: monospace; word-break: break-all; }
  tr.failure td { color: #fca5a5; } tr.inactive td { color: #6b829a; }
  .once { margin-top: 1rem; padding: .8rem 1rem; border: 2px solid #fbbf24; border-radius: .4rem;
          background: #2a2410; }
  .once input { width: 100%; box-sizing: border-box; font-family: monospace; margin: .4rem 0; }
  .alert { padding: 1rem; border-radius: .4rem; background: #7f1d1d; color: white;
           font-size: 1.15rem; font-weight: 700; border: 2px solid #fca5a5; }
{% endraw %}</style>
</head>
<body>
<header>
  <strong id="archive-name">{{ archive_name }}</strong>
  <nav><a href="/">Trang chủ · Home</a><a href="/viewer/">Trình xem ảnh · Viewer</a>
    {%- block nav %}{% endblock %}</nav>
  <span class="who">Đã đăng nhập · signed in as <b id="signed-in-user">{{ user }}</b></span>
  <form id="logout-form" method="post" action="/logout">
    <input type="hidden" name="csrf_token" value="{{ csrf_token }}">
    <button type="submit" class="small">Đăng xuất · Sign out</button>
  </form>
</header>
<main>
<noscript><p class="alert">This page needs JavaScript.</p></noscript>
{% block body %}{% endblock %}
</main>
<script>{% raw %}
"use strict";
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
const NONE = "(không có · none)";

// One place for every call: same-origin cookies, the CSRF header on writes, and the API's
// {"error": reason} turned into an Error whose message is shown beside the form.
async function api(method, url, body, accept) {
  const headers = {"Accept": accept || "application/json"};
  if (method !== "GET") headers["X-CSRF-Token"] = CSRF;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {method, headers, credentials: "same-origin",
                                     body: body === undefined ? undefined : JSON.stringify(body)});
  const text = response.status === 204 ? "" : await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!response.ok) {
    throw new Error((data && data.error) || (response.status + " " + response.statusText));
  }
  return data;
}
function showError(box, error) {
  box.textContent = error ? (error.message || String(error)) : "";
  box.hidden = !error;
}
// Run a call; its error (or none) goes to the box beside the form or table that caused it.
async function attempt(box, call) {
  try { await call(); showError(box, null); } catch (error) { showError(box, error); }
}
function onSubmit(id, box, call) {
  $(id).addEventListener("submit", (event) => { event.preventDefault(); attempt($(box), call); });
}
// API data (names of patients and users) enters the page only as textContent.
function cell(tr, value, className) {
  const td = tr.insertCell();
  td.textContent = value === null || value === undefined ? "" : String(value);
  if (className) td.className = className;
  return td;
}
function button(label, className, onClick) {
  const b = Object.assign(document.createElement("button"),
                          {type: "button", className: "small " + className, textContent: label});
  b.addEventListener("click", onClick);
  return b;
}
// One row per item, drawn by row(tr, item); a single "none" row when there are none.
function fill(tbody, items, columns, row, emptyText) {
  const rows = items.map((item) => { const tr = document.createElement("tr"); row(tr, item);
                                     return tr; });
  if (!rows.length) rows.push(document.createElement("tr"));
  if (!items.length) cell(rows[0], emptyText || NONE).colSpan = columns;
  tbody.replaceChildren(...rows);
}
function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
function yes(flag) { return flag ? "có · yes" : "—"; }
// A secret shown once (parts.once): the box, its text, and a Copy button that copies it.
function showOnce(name, text) {
  $(name).value = text;
  $(name + "-copy-status").textContent = "";
  $(name + "-box").hidden = false;
}
document.querySelectorAll(".once").forEach((box) => box.querySelector("button")
  .addEventListener("click", () => copyText(box.querySelector("input"),
                                            box.querySelector("span"))));
async function copyText(input, status) {
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
  } catch (e) {
    // No clipboard API outside a secure context: try the old command; the text stays selected.
    try { document.execCommand("copy"); } catch (e2) { /* the selection is the fallback */ }
  }
  status.textContent = "Đã chép · Copied";
}
{% endraw %}</script>
{% block script %}{% endblock %}
</body>
</html>
"""

_PARTS = """
{% macro table(name, headers) -%}
<p id="{{ name }}-error" class="error" role="alert" hidden></p>
<div class="scroll"><table id="{{ name }}-table"><thead><tr>{% for header in headers -%}
  <th>{{ header }}</th>{% endfor %}<th></th></tr></thead><tbody id="{{ name }}-body"></tbody>
</table></div>
{%- endmacro %}
{% macro once(name, title, note) -%}
<div id="{{ name }}-box" class="once" hidden><b>{{ title }}</b>
  <input id="{{ name }}" readonly aria-label="{{ title }}">
  <button id="{{ name }}-copy" type="button" class="small">Chép · Copy</button>
  <span id="{{ name }}-copy-status"></span><p class="hint">{{ note }}</p></div>
{%- endmacro %}
"""

_ADMIN = """{% extends "base.html" %}
{% import "parts.html" as parts %}
{% block title %}Quản trị · Admin{% endblock %}
{% block nav %}<a href="/shares">Chia sẻ · Shares</a>{% endblock %}
{% block body %}
<section id="audit-status" aria-live="polite">
  <h2>Nhật ký · Audit trail</h2>
  <div id="audit-status-box">…</div>
</section>

<section id="users">
  <h2>Người dùng · Users</h2>
  <form id="user-form" class="row" autocomplete="off">
    <label>Tên đăng nhập · User name<input id="user-username" name="username" required></label>
    <label>Mật khẩu · Password<input id="user-password" name="password" type="password"
      required autocomplete="new-password"></label>
    <label>Vai trò · Role<select id="user-role" name="role">
      {% for role in roles %}<option value="{{ role }}">{{ role }}</option>{% endfor %}
    </select></label>
    <label>Cơ sở · Institutions (comma-separated)
      <input id="user-institutions" name="institutions"></label>
    <button id="user-submit" type="submit">Thêm · Add user</button>
  </form>
  <p id="user-form-error" class="error" role="alert" hidden></p>
  {{ parts.table("users", ["Tên · User", "Vai trò · Role", "Cơ sở · Institutions",
                           "Đã khoá · Disabled"]) }}
</section>

<section id="tokens">
  <h2>Mã truy cập API · API tokens</h2>
  <form id="token-form" class="row" autocomplete="off">
    <label>Người dùng · User<input id="token-username" name="username" required
      list="token-users"></label><datalist id="token-users"></datalist>
    {% for scope in scopes %}<label class="check"><input type="checkbox" name="scopes"
      id="token-scope-{{ scope }}" value="{{ scope }}"
      {%- if scope == "read" %} checked{% endif %}> {{ scope }}</label>{% endfor %}
    <label>Nhãn · Label<input id="token-label" name="label"></label>
    <label>Số ngày · Days<input id="token-days" name="days" type="number" min="1" max="3650"
      placeholder="∞"></label>
    <button id="token-submit" type="submit">Tạo mã · Create token</button>
  </form>
  <p id="token-form-error" class="error" role="alert" hidden></p>
  {{ parts.once("token-secret", "Mã mới · New token",
                "Mã này chỉ hiện một lần · This token will not be shown again: copy it now.") }}
  {{ parts.table("tokens", ["ID", "Người dùng · User", "Nhãn · Label", "Quyền · Scopes",
     "Tạo lúc · Created", "Hết hạn · Expires", "Thu hồi · Revoked"]) }}
</section>

<section id="audit">
  <h2>Tra cứu nhật ký · Audit records</h2>
  <form id="audit-form" class="row">
    <label>Người dùng · User<input id="audit-user" name="user"></label>
    <label>Mã bệnh nhân · Patient ID<input id="audit-patient-id" name="patient_id"></label>
    <label>Study UID<input id="audit-study-uid" name="study_uid"></label>
    <label>Hành động · Action<select id="audit-action" name="action">
      <option value="">(tất cả · all)</option>
      {% for action in actions %}<option value="{{ action }}">{{ action }}</option>{% endfor %}
    </select></label>
    <label>Từ · Since<input id="audit-since" name="since" type="date"></label>
    <label>Đến · Until<input id="audit-until" name="until" type="date"></label>
    <label>Tối đa · Limit<input id="audit-limit" name="limit" type="number" min="1"
      max="10000" value="200"></label>
    <button id="audit-submit" type="submit">Tìm · Search</button>
    <a id="audit-export-csv" href="/api/audit?format=csv">Xuất CSV · Export CSV</a>
    <a id="audit-export-dicom" href="/api/audit?format=dicom">
      Xuất DICOM · Export DICOM audit (XML)</a>
  </form>
  <p id="audit-count" class="hint"></p>
  {# The columns are named as in the CSV export, so the two read the same. #}
  {{ parts.table("audit", audit_columns) }}
</section>
{% endblock %}
{% block script %}<script>
const ROLES = {{ roles | tojson }};
const AUDIT_COLUMNS = {{ audit_columns | tojson }};
{% raw %}
async function loadAuditStatus() {
  const p = document.createElement("p");
  try {
    const s = await api("GET", "/api/audit/status");
    p.className = s.ok ? "ok" : "alert";
    p.textContent = s.ok
      ? "● Đang ghi · recording (pending " + s.pending + ", dropped " + s.dropped + ")"
      : "⚠ Nhật ký KHÔNG được ghi · audit records are NOT being written: " +
        (s.last_error || "unknown error") + " (dropped " + s.dropped + ")";
  } catch (error) {
    p.className = "alert";
    p.textContent = "⚠ Cannot read the audit status: " + error.message;
  }
  if (p.className === "alert") p.setAttribute("role", "alert");
  $("audit-status-box").replaceChildren(p);
}

function patchUser(name, change) {
  attempt($("users-error"), () => api("PATCH", "/api/users/" + encodeURIComponent(name), change))
    .then(loadUsers);
}
function userRow(tr, u) {
  tr.dataset.username = u.username;
  cell(tr, u.username);
  const role = document.createElement("select");
  role.className = "user-role";
  role.setAttribute("aria-label", "role");
  for (const name of ROLES.includes(u.role) ? ROLES : [u.role, ...ROLES]) {
    role.add(new Option(name, name, false, name === u.role));
  }
  role.addEventListener("change", () => patchUser(u.username, {role: role.value}));
  cell(tr, "").append(role);
  cell(tr, (u.institutions || []).join(", "));
  cell(tr, yes(u.disabled));
  cell(tr, "").append(
    button(u.disabled ? "Mở khoá · Enable" : "Khoá · Disable", "user-toggle",
           () => patchUser(u.username, {disabled: !u.disabled})),
    button("Đặt mật khẩu · Set password", "user-password", () => {
      const password = window.prompt("New password for " + u.username);
      if (password) patchUser(u.username, {password});
    }));
}
const loadUsers = () => attempt($("users-error"), async () => {
  const users = await api("GET", "/api/users");
  $("token-users").replaceChildren(...users.map((u) => new Option(u.username, u.username)));
  fill($("users-body"), users, 5, userRow);
});
onSubmit("user-form", "user-form-error", async () => {
  await api("POST", "/api/users", {
    username: $("user-username").value.trim(), password: $("user-password").value,
    role: $("user-role").value, institutions: $("user-institutions").value.split(",")
      .map((s) => s.trim()).filter(Boolean)});
  $("user-form").reset();
  await loadUsers();
});

function tokenRow(tr, t) {
  tr.dataset.tokenId = t.id;
  if (t.revoked_at) tr.className = "inactive";
  for (const value of [t.id, t.username, t.label, (t.scopes || []).join(" "),
                       when(t.created_at), when(t.expires_at), when(t.revoked_at)]) {
    cell(tr, value);
  }
  const actions = cell(tr, "");
  if (t.revoked_at) return;
  actions.append(button("Thu hồi · Revoke", "danger token-revoke", () => {
    if (!window.confirm("Revoke token " + t.id + " of " + t.username + "?")) return;
    attempt($("tokens-error"), () => api("DELETE", "/api/tokens/" + encodeURIComponent(t.id)))
      .then(loadTokens);
  }));
}
const loadTokens = () => attempt($("tokens-error"), async () => {
  fill($("tokens-body"), await api("GET", "/api/tokens"), 8, tokenRow);
});
onSubmit("token-form", "token-form-error", async () => {
  $("token-secret-box").hidden = true;  // a failed attempt must not leave the last token showing
  const request = {
    username: $("token-username").value.trim(), label: $("token-label").value,
    scopes: [...$("token-form").querySelectorAll('input[name="scopes"]:checked')]
      .map((box) => box.value)};
  if ($("token-days").value) request.days = Number($("token-days").value);
  const answer = await api("POST", "/api/tokens", request);
  showOnce("token-secret", answer.token);
  await loadTokens();
});

function auditParams(format) {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData($("audit-form"))) {
    if (String(value).trim()) params.set(name, String(value).trim());
  }
  if (format) params.set("format", format);
  return "/api/audit?" + params.toString();
}
function updateExports() {
  $("audit-export-csv").href = auditParams("csv");
  $("audit-export-dicom").href = auditParams("dicom");
}
function auditRow(tr, e) {
  if (e.outcome === "failure") tr.className = "failure";
  for (const column of AUDIT_COLUMNS) {
    cell(tr, column === "at" ? when(e.at) : e[column], column === "study_uid" ? "uid" : "");
  }
}
const loadAudit = () => attempt($("audit-error"), async () => {
  updateExports();
  const events = await api("GET", auditParams());
  $("audit-count").textContent = events.length + " bản ghi · records";
  fill($("audit-body"), events, AUDIT_COLUMNS.length, auditRow);
});
onSubmit("audit-form", "audit-error", loadAudit);
$("audit-form").addEventListener("input", updateExports);

loadAuditStatus();
setInterval(loadAuditStatus, 30000);
loadUsers();
loadTokens();
loadAudit();
{% endraw %}</script>{% endblock %}
"""

_SHARES = """{% extends "base.html" %}
{% import "parts.html" as parts %}
{% block title %}Chia sẻ ca chụp · Share studies{% endblock %}
{% block body %}
<section id="find">
  <h2>Tìm ca chụp · Find a study</h2>
  <form id="find-form" class="row">
    <label>Tên hoặc mã bệnh nhân · Patient name or ID
      <input id="find-text" name="text" required size="32"></label>
    <button id="find-submit" type="submit">Tìm · Search</button>
  </form>
  {{ parts.table("find", ["Bệnh nhân · Patient", "Mã BN · Patient ID", "Ngày · Date",
     "Mô tả · Description", "Loại máy · Modalities", "Study UID"]) }}
</section>

<section id="share-form">
  <h2>Tạo liên kết chia sẻ · Create a share link</h2>
  <form id="share-create-form" class="row" autocomplete="off">
    <label>Study UID<input id="share-study-uid" name="study_uid" required size="40"></label>
    <label>Series UID (tuỳ chọn · optional)
      <input id="share-series-uid" name="series_uid" size="40"></label>
    <label>Thời hạn · Valid for<select id="share-hours" name="hours">
      {% for hours, label in durations %}<option value="{{ hours }}"
        {%- if hours == 24 %} selected{% endif %}>{{ label }}</option>{% endfor %}
    </select></label>
    <label>Mã PIN (tuỳ chọn · optional)<input id="share-pin" name="pin" inputmode="numeric"
      pattern="[0-9]{4,12}" minlength="4" maxlength="12" placeholder="4–12 digits"></label>
    <label class="check"><input id="share-deidentify" name="deidentify" type="checkbox">
      Ẩn danh · De-identify</label>
    <label>Ghi chú · Note<input id="share-note" name="note" size="30"></label>
    <button id="share-submit" type="submit">Tạo liên kết · Create link</button>
  </form>
  <p class="hint">Gửi mã PIN qua kênh khác · send the PIN by another channel (phone, SMS),
    never in the same message as the link.</p>
  <p class="hint">Ẩn danh · De-identified: names, IDs and dates are hidden; images whose
    annotation is burned in are not shown.</p>
  <p id="share-form-error" class="error" role="alert" hidden></p>
  {{ parts.once("share-url", "Liên kết · Link",
                "Liên kết chỉ hiện một lần · The link is shown only once: copy it now.") }}
</section>

<section id="links">
  <h2>Liên kết của tôi · My links
    <button id="links-refresh" type="button" class="small">Làm mới · Refresh</button></h2>
  {{ parts.table("links", link_columns) }}
</section>
{% endblock %}
{% block script %}<script>
const LINK_COLUMNS = {{ link_columns | tojson }};
{% raw %}
// DICOM JSON (PS3.18 F.2): the first value of a tag; a person name as its alphabetic form,
// "Nguyễn^Văn An" shown as "Nguyễn Văn An".
function first(dataset, tag) {
  const value = ((dataset[tag] || {}).Value || [])[0];
  if (value && typeof value === "object") {
    return (value.Alphabetic || "").split("^").filter(Boolean).join(" ");
  }
  return value === undefined ? "" : String(value);
}
function studyDate(text) {
  return /^[0-9]{8}$/.test(text) ? [text.slice(0, 4), text.slice(4, 6), text.slice(6)]
    .join("-") : text;
}
async function qido(params) {  // 204 (no match) gives null
  const url = "/dicom-web/studies?" + new URLSearchParams(
    {...params, limit: "50", includefield: "StudyDescription"});
  const answer = await api("GET", url, undefined, "application/dicom+json");
  return Array.isArray(answer) ? answer : [];
}
function studyRow(tr, study) {
  const uid = first(study, "0020000D");
  tr.dataset.studyUid = uid;
  for (const tag of ["00100010", "00100020"]) cell(tr, first(study, tag));
  cell(tr, studyDate(first(study, "00080020")));
  cell(tr, first(study, "00081030"));
  cell(tr, ((study["00080061"] || {}).Value || []).join("/"));
  cell(tr, uid, "uid");
  cell(tr, "").append(button("Chia sẻ · Share", "find-share", () => {
    $("share-study-uid").value = uid;
    $("share-series-uid").value = "";
    $("share-url-box").hidden = true;
    $("share-form").scrollIntoView({behavior: "smooth"});
    $("share-pin").focus();
  }));
}
onSubmit("find-form", "find-error", async () => {
  const text = $("find-text").value.trim();
  if (!text) return;
  let studies = await qido({PatientName: text.endsWith("*") ? text : text + "*",
                            fuzzymatching: "true"});
  // Nothing by name: the text may be a patient ID.
  if (!studies.length) studies = await qido({PatientID: text});
  fill($("find-body"), studies, 7, studyRow, "Không tìm thấy · No study found");
});

onSubmit("share-create-form", "share-form-error", async () => {
  $("share-url-box").hidden = true;  // a failed attempt must not leave the last link showing
  const pin = $("share-pin").value.trim();
  if (pin && !/^[0-9]{4,12}$/.test(pin)) throw new Error("Mã PIN · The PIN is 4 to 12 digits.");
  const answer = await api("POST", "/api/shares", {
    study_uid: $("share-study-uid").value.trim(),
    series_uid: $("share-series-uid").value.trim() || null,
    hours: Number($("share-hours").value), pin: pin || null,
    deidentify: $("share-deidentify").checked, note: $("share-note").value});
  showOnce("share-url", answer.url);
  $("share-pin").value = "";
  await loadLinks();
});

function linkRow(tr, link) {
  tr.dataset.shareId = link.id;
  if (!link.active) tr.className = "inactive";
  for (const column of LINK_COLUMNS) {
    const value = link[column];
    cell(tr, column.endsWith("_at") ? when(value) : typeof value === "boolean" ? yes(value)
         : value, column.endsWith("_uid") ? "uid" : "");
  }
  const actions = cell(tr, "");
  if (!link.active) return;
  actions.append(button("Thu hồi · Revoke", "danger link-revoke", () => {
    if (!window.confirm("Revoke share link " + link.id + "?")) return;
    attempt($("links-error"), () => api("DELETE", "/api/shares/" + encodeURIComponent(link.id)))
      .then(loadLinks);
  }));
}
const loadLinks = () => attempt($("links-error"), async () => {
  fill($("links-body"), await api("GET", "/api/shares"), LINK_COLUMNS.length + 1, linkRow);
});
$("links-refresh").addEventListener("click", loadLinks);
loadLinks();
{% endraw %}</script>{% endblock %}
"""

# The lists come from the code that checks them, so a new role or action shows up here too.
AUDIT_ACTIONS = tuple(action.value for action in Action)
AUDIT_COLUMNS = ("at", "action", "outcome", "actor_kind", "actor", "address", "protocol",
                 "patient_id", "study_uid", "count", "detail")
LINK_COLUMNS = ("id", "study_uid", "series_uid", "created_by", "created_at", "expires_at",
                "active", "deidentify", "pin", "note")
SHARE_DURATIONS = ((1, "1 giờ · 1 hour"), (4, "4 giờ · 4 hours"), (24, "1 ngày · 1 day"),
                   (72, "3 ngày · 3 days"), (168, "7 ngày · 7 days"))

# Autoescaping on for every template (the names end in .html, but say it outright): the user
# name and archive name come from configuration and accounts, not from the code.
_templates = Environment(
    loader=DictLoader({"base.html": _BASE, "parts.html": _PARTS, "admin.html": _ADMIN,
                       "shares.html": _SHARES}),
    autoescape=True)


#: The pages, by name: their template and what else they show.
_PAGES = {
    "admin": ("admin.html", lambda: {"roles": list(ROLES), "scopes": SCOPES,
                                     "actions": AUDIT_ACTIONS,
                                     "audit_columns": list(AUDIT_COLUMNS)}),
    "shares": ("shares.html", lambda: {"durations": SHARE_DURATIONS,
                                       "link_columns": list(LINK_COLUMNS)}),
}


def render_page(name: str, *, csrf_token: str, user: str, archive_name: str) -> str:
    """One of the pages as a complete HTML document.

    Parameters
    ----------
    name
        ``admin`` (sections ``audit-status``, ``users``, ``tokens``, ``audit``) or
        ``shares`` (sections ``find``, ``share-form``, ``links``).
    csrf_token
        The session's CSRF token, sent back as ``X-CSRF-Token`` on every write.
    user, archive_name
        The signed-in user's name and the archive's name, shown in the header.
    """
    template, extra = _PAGES[name]
    return _templates.get_template(template).render(
        csrf_token=csrf_token, user=user, archive_name=archive_name, **extra())


def page_response(name: str) -> Response:
    """The page ``name`` for the current request's user: never cached, never framed."""
    from pacs.web.auth import principal

    who = principal()
    page = render_page(name, csrf_token=who.csrf_token or "", user=who.name,
                       archive_name=current_app.config["PACS_SETTINGS"].archive_name)
    response = Response(page, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"  # no clickjacking of the admin buttons
    return response
