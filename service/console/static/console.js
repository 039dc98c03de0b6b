// AnyFace console: a single page over the public REST API, with the operator's API key (kept in sessionStorage,
// so for this tab only). No build step and no framework: DOM built with `h()`, text always set as text (never as
// HTML), hash routes. The service enforces every permission; the console only hides and disables what the key's
// `GET /v1/me` says it may not do.
"use strict";

const KEY_STORAGE = "anyface.key";
const PAGE_SIZE = 50;
const state = { key: null, me: null, blobs: [], noticeAge: 0 };

// ---------------------------------------------------------------------------------------------- DOM helpers
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function field(label, control, hint) {
  return h("label", { class: "field" }, h("span", {}, label), control, hint ? h("small", { class: "muted" }, hint) : null);
}

const main = () => document.getElementById("main");

function show(title, ...content) {
  for (const url of state.blobs) URL.revokeObjectURL(url);
  state.blobs = [];
  const m = main();
  m.replaceChildren(h("h1", {}, title), ...content.filter((c) => c !== null && c !== undefined && c !== false));
  document.title = `${title} · AnyFace console`;
}

// A notice stays through the navigation that follows it (e.g. "created", then the new gallery's page), then goes.
function notify(message, error = false) {
  state.noticeAge = 0;
  const n = document.getElementById("notice");
  n.textContent = message || "";
  n.classList.toggle("error", Boolean(error && message));
}

function errorText(err) {
  return err.code ? `${err.message} (${err.code})` : err.message;
}

function confirmDialog(text, action = "Delete") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = action;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"),
                                                         { once: true }));
}

function fmt(x, digits = 3) { return typeof x === "number" ? x.toFixed(digits) : "–"; }
function when(seconds) { return new Date(seconds * 1000).toLocaleString(); }

// ---------------------------------------------------------------------------------------------- the API
class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, { json, form, blob } = {}) {
  const headers = {};
  if (state.key) headers["X-API-Key"] = state.key;
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form) body = form;
  let res;
  try {
    res = await fetch(path, { method, headers, body });
  } catch (err) {
    throw new ApiError(0, "network_error", "the service could not be reached");
  }
  if (res.ok && blob) return res.blob();
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json().catch(() => null) : null;
  if (!res.ok) {
    const e = data && data.error ? data.error : { code: `http_${res.status}`, message: res.statusText };
    if (res.status === 401 && path !== "/v1/me") { signOut("Your key was refused: sign in again."); }
    throw new ApiError(res.status, e.code, e.message);
  }
  return data;
}

const enc = encodeURIComponent;
const galleryPath = (g) => `/v1/galleries/${enc(g)}`;
const subjectPath = (g, s) => `${galleryPath(g)}/subjects/${enc(s)}`;

function canRead(gallery) {
  const g = state.me && state.me.galleries;
  return !g || g.includes(gallery);
}
function canWrite(gallery) {
  return Boolean(state.me) && !state.me.read_only && canRead(gallery);
}
const canCreate = () => Boolean(state.me) && !state.me.read_only;

async function thumbnail(gallery, subjectId, faceId, alt) {
  const img = h("img", { class: "thumb", alt, width: 56, height: 56 });
  if (faceId === null || faceId === undefined) { img.alt = `${alt}: no face`; return img; }
  api("GET", `${subjectPath(gallery, subjectId)}/faces/${faceId}/thumbnail`, { blob: true }).then((b) => {
    const url = URL.createObjectURL(b);
    state.blobs.push(url);
    img.src = url;
  }).catch(() => { img.alt = `${alt}: no thumbnail`; });
  return img;
}

// ---------------------------------------------------------------------------------------------- photos and drawing
async function bitmapOf(file) {
  return createImageBitmap(file, { imageOrientation: "from-image" });
}

// The photo on a canvas (at most `maxSide` px) with each face's box, landmarks and label drawn over it.
async function drawFaces(file, faces, labels = [], maxSide = 640) {
  const bitmap = await bitmapOf(file);
  const scale = Math.min(1, maxSide / Math.max(bitmap.width, bitmap.height));
  const canvas = h("canvas", { class: "photo", width: Math.round(bitmap.width * scale),
                               height: Math.round(bitmap.height * scale), role: "img",
                               "aria-label": `${file.name}: ${faces.length} face${faces.length === 1 ? "" : "s"}` });
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  faces.forEach((face, i) => {
    const b = face.box;
    ctx.lineWidth = Math.max(2, canvas.width / 250);
    ctx.strokeStyle = i === 0 ? "#00e676" : "#ffd600";
    ctx.strokeRect(b.x1 * scale, b.y1 * scale, (b.x2 - b.x1) * scale, (b.y2 - b.y1) * scale);
    ctx.fillStyle = "#ff1744";
    for (const [x, y] of face.landmarks || []) {
      ctx.beginPath(); ctx.arc(x * scale, y * scale, Math.max(2, canvas.width / 200), 0, 2 * Math.PI); ctx.fill();
    }
    const label = labels[i] || `#${i + 1}`;
    ctx.font = `${Math.max(12, Math.round(canvas.width / 40))}px system-ui, sans-serif`;
    const w = ctx.measureText(label).width + 8;
    const y = Math.max(0, b.y1 * scale - 20);
    ctx.fillStyle = "rgba(0,0,0,.7)"; ctx.fillRect(b.x1 * scale, y, w, 20);
    ctx.fillStyle = "#fff"; ctx.fillText(label, b.x1 * scale + 4, y + 15);
  });
  return canvas;
}

// A drop zone around a file input: photos can be dropped on it, or chosen with the input (keyboard users).
function dropZone(label, onFiles, { multiple = false, id } = {}) {
  const input = h("input", { type: "file", accept: "image/*", multiple, id });
  const zone = h("label", { class: "drop" }, h("span", {}, label), input);
  input.addEventListener("change", () => { if (input.files.length) onFiles([...input.files]); input.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const files = [...e.dataTransfer.files].filter((f) => f.type.startsWith("image/") || !f.type);
    if (files.length) onFiles(multiple ? files : files.slice(0, 1));
  });
  return zone;
}

function photoForm(fields) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (value === null || value === undefined || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => form.append(name, v, v.name));
    else if (value instanceof File) form.append(name, value, value.name);
    else form.append(name, String(value));
  }
  return form;
}

// ---------------------------------------------------------------------------------------------- sign-in
async function signIn(key) {
  const previous = state.key;
  state.key = key || null;
  try {
    state.me = await api("GET", "/v1/me");
  } catch (err) {
    state.key = previous;
    throw err;
  }
  if (state.key) sessionStorage.setItem(KEY_STORAGE, state.key);
  renderChrome();
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  state.key = null; state.me = null;
  renderChrome();
  location.hash = "#/signin";
  if (message) notify(message, true);
}

function renderChrome() {
  const signedIn = Boolean(state.me);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("signout").hidden = !(signedIn && state.me.auth_required);
  const who = document.getElementById("who");
  if (!signedIn) { who.textContent = ""; return; }
  const me = state.me;
  const scope = me.galleries ? `galleries: ${me.galleries.join(", ")}` : "every gallery";
  who.textContent = me.auth_required
    ? `${me.name || "key"} · ${me.read_only ? "read-only" : "read-write"} · ${scope}`
    : "no API keys configured: every call is allowed";
}

function signInScreen() {
  const input = h("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "off", required: true,
                             spellcheck: "false" });
  const error = h("p", { class: "bad", role: "alert" });
  const form = h("form", { class: "panel", onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = "";
    try {
      await signIn(input.value.trim());
      notify("");
      location.hash = "#/galleries";
    } catch (err) {
      error.textContent = err.status === 401 ? "This key is not known to the service." : errorText(err);
      input.focus();
    }
  } },
  field("API key", input, "Kept in this tab only; closing the tab forgets it."),
  h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Sign in")), error);
  show("Sign in", h("p", {}, "Sign in with an API key. The console shows what that key may see and do."), form);
  input.focus();
}

// ---------------------------------------------------------------------------------------------- galleries
async function galleriesScreen() {
  show("Galleries", h("p", { class: "muted" }, "Loading…"));
  let list;
  try { list = (await api("GET", "/v1/galleries")).galleries; } catch (err) { return failed(err); }
  const rows = list.map((g) => h("tr", {},
    h("td", {}, h("a", { href: `#/g/${enc(g.name)}` }, g.name)),
    h("td", { class: "num" }, g.subjects), h("td", { class: "num" }, g.faces),
    h("td", { class: "hide-narrow" }, g.index_type),
    h("td", { class: "hide-narrow code" }, g.embedder || "default trunk (unrecorded)"),
    h("td", {}, h("button", { type: "button", class: "danger", disabled: !canWrite(g.name),
                              "aria-label": `Delete gallery ${g.name}`,
                              onclick: () => deleteGallery(g) }, "Delete"))));
  const table = list.length
    ? h("div", { class: "scroll" }, h("table", {}, h("caption", { class: "visually-hidden" }, "Galleries"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Gallery"), h("th", { scope: "col", class: "num" }, "Subjects"),
        h("th", { scope: "col", class: "num" }, "Faces"), h("th", { scope: "col", class: "hide-narrow" }, "Index"),
        h("th", { scope: "col", class: "hide-narrow" }, "Embedder"), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
      h("tbody", {}, rows)))
    : h("p", {}, "No gallery yet.");
  const name = h("input", { id: "new-gallery", name: "gallery", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}",
                            disabled: !canCreate(), autocomplete: "off" });
  const create = h("form", { class: "panel", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("PUT", galleryPath(name.value));
      notify(`Gallery ${name.value} created.`);
      location.hash = `#/g/${enc(name.value)}`;
    } catch (err) { notify(errorText(err), true); }
  } }, h("h2", {}, "New gallery"),
  h("div", { class: "row" }, field("Gallery name", name, "letters, digits, . _ - (up to 64)"),
    h("button", { type: "submit", class: "primary", disabled: !canCreate() }, "Create gallery")),
  canCreate() ? null : h("p", { class: "muted" }, "This key is read-only: it cannot create galleries."));
  show("Galleries", table, create);
}

async function deleteGallery(g) {
  const ok = await confirmDialog(`Delete gallery ${g.name} with its ${g.subjects} subjects and ${g.faces} faces? ` +
                                 "This cannot be undone.");
  if (!ok) return;
  try {
    await api("DELETE", galleryPath(g.name));
    notify(`Gallery ${g.name} deleted.`);
    galleriesScreen();
  } catch (err) { notify(errorText(err), true); }
}

// ---------------------------------------------------------------------------------------------- one gallery
async function galleryScreen(gallery, params) {
  const query = params.get("q") || "";
  const cursors = (params.get("trail") || "").split(",").filter(Boolean);  // cursors of the pages before this one
  const cursor = params.get("cursor") || "";
  show(gallery, h("p", { class: "muted" }, "Loading…"));
  let info, page;
  try {
    const qs = new URLSearchParams({ limit: PAGE_SIZE });
    if (cursor) qs.set("cursor", cursor);
    if (query) qs.set("q", query);
    [info, page] = await Promise.all([api("GET", galleryPath(gallery)),
                                      api("GET", `${galleryPath(gallery)}/subjects?${qs}`)]);
  } catch (err) { return failed(err); }
  const link = (extra) => {
    const p = new URLSearchParams();
    if (query) p.set("q", query);
    for (const [k, v] of Object.entries(extra)) if (v) p.set(k, v);
    return `#/g/${enc(gallery)}?${p}`;
  };
  const search = h("input", { type: "search", id: "subject-search", name: "q", value: query, autocomplete: "off" });
  const searchForm = h("form", { role: "search", class: "row", onsubmit: (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    if (search.value.trim()) p.set("q", search.value.trim());
    location.hash = `#/g/${enc(gallery)}?${p}`;
  } }, field("Search subjects by id or name", search), h("button", { type: "submit" }, "Search"));
  const rows = await Promise.all(page.subjects.map(async (s) => h("tr", {},
    h("td", {}, await thumbnail(gallery, s.subject_id, s.first_face_id, `Face of ${s.name || s.subject_id}`)),
    h("td", { class: "code" }, h("a", { href: `#/g/${enc(gallery)}/s/${enc(s.subject_id)}` }, s.subject_id)),
    h("td", {}, s.name || h("span", { class: "muted" }, "–")),
    h("td", { class: "num" }, s.face_count))));
  const table = page.subjects.length
    ? h("div", { class: "scroll" }, h("table", { id: "subjects" },
      h("caption", { class: "visually-hidden" }, `Subjects of ${gallery}`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Face"), h("th", { scope: "col" }, "Subject id"),
        h("th", { scope: "col" }, "Name"), h("th", { scope: "col", class: "num" }, "Faces"))),
      h("tbody", {}, rows)))
    : h("p", {}, query ? `No subject matches “${query}”.` : "No subject yet.");
  const prevCursor = cursors.length ? cursors[cursors.length - 1] : null;
  const pager = h("nav", { class: "pager", "aria-label": "Pages" },
    cursors.length || cursor
      ? h("a", { href: link({ cursor: prevCursor === "-" ? "" : prevCursor, trail: cursors.slice(0, -1).join(",") }) },
          "← Previous")
      : null,
    h("span", { class: "muted" }, `${page.subjects.length} shown${query ? " (search)" : ""}`),
    page.next_cursor
      ? h("a", { href: link({ cursor: page.next_cursor, trail: [...cursors, cursor || "-"].join(",") }) }, "Next →")
      : null);
  show(gallery,
    h("p", { class: "muted" }, `${info.subjects} subjects · ${info.faces} faces · index ${info.index_type} · `,
      h("span", { class: "code" }, info.embedder || "default trunk")),
    searchForm, table, pager,
    canWrite(gallery)
      ? enrolPanel(gallery, null, (subjectId) => h("a", { href: `#/g/${enc(gallery)}/s/${enc(subjectId)}` },
                                                  `Open ${subjectId}`))
      : h("p", { class: "muted" }, "This key may not enrol into this gallery."));
}

// Enrolment: photos are previewed with /v1/detect (the face that would be enrolled, or why the photo is refused),
// then committed one request per photo, so one refused photo does not hold back the others.
function enrolPanel(gallery, subject, afterEnrol = null) {
  const sid = h("input", { id: "enrol-subject", name: "subject_id", required: true, autocomplete: "off",
                           pattern: "[A-Za-z0-9][A-Za-z0-9._:@\\-]{0,127}" });
  const name = h("input", { id: "enrol-name", name: "name", autocomplete: "off" });
  const multiple = h("input", { type: "checkbox", id: "enrol-multiple" });
  const previews = h("div", { class: "previews", "aria-live": "polite" });
  const commit = h("button", { type: "submit", class: "primary", disabled: true }, "Enrol photos");
  const summary = h("p", { role: "status" });
  let items = [];

  const refresh = () => {
    const ready = items.filter((it) => it.state === "ready" || (it.state === "several" && multiple.checked));
    commit.disabled = ready.length === 0;
    commit.textContent = ready.length ? `Enrol ${ready.length} photo${ready.length === 1 ? "" : "s"}` : "Enrol photos";
    for (const it of items) {
      it.card.classList.toggle("refused", it.state === "refused" || (it.state === "several" && !multiple.checked));
      it.card.classList.toggle("done", it.state === "enrolled");
    }
  };
  multiple.addEventListener("change", refresh);

  const addFiles = async (files) => {
    summary.replaceChildren();
    for (const file of files) {
      const status = h("p", {}, "Finding the face…");
      const card = h("figure", { class: "preview" }, h("figcaption", { class: "code" }, file.name), status);
      previews.append(card);
      const item = { file, card, status, state: "checking" };
      items.push(item);
      try {
        const result = await api("POST", "/v1/detect", { form: photoForm({ image: file }) });
        const faces = result.faces;
        card.insertBefore(await drawFaces(file, faces, faces.map((f, i) => (i === 0 ? "enrol" : `#${i + 1}`)), 320),
                          status);
        if (faces.length === 0) {
          item.state = "refused"; status.replaceChildren(h("span", { class: "bad" }, "Refused: no face found."));
        } else if (faces.length > 1) {
          item.state = "several";
          status.replaceChildren(h("span", { class: "warn" }, `${faces.length} faces: tick “enrol the largest face” ` +
                                   "to enrol the one boxed in green."));
        } else {
          item.state = "ready";
          status.replaceChildren(h("span", { class: "ok" }, "One face"),
            ` · ${Math.round(faces[0].size)} px · quality ${fmt(faces[0].quality, 2)} · ${faces[0].branch}`);
        }
      } catch (err) {
        item.state = "refused";
        status.replaceChildren(h("span", { class: "bad" }, `Refused: ${errorText(err)}`));
      }
      refresh();
    }
  };

  const form = h("form", { class: "panel", id: "enrol", onsubmit: async (e) => {
    e.preventDefault();
    const subjectId = subject ? subject : sid.value.trim();
    if (!subjectId) { sid.focus(); return; }
    commit.disabled = true;
    let enrolled = 0, refused = 0;
    for (const it of items) {
      const allowed = it.state === "ready" || (it.state === "several" && multiple.checked);
      if (!allowed) continue;
      it.status.textContent = "Enrolling…";
      try {
        const res = await api("POST", `${subjectPath(gallery, subjectId)}/faces`, { form: photoForm({
          images: [it.file], name: subject ? null : name.value.trim() || null,
          allow_multiple: it.state === "several" ? "true" : null }) });
        it.state = "enrolled"; enrolled += 1;
        it.status.replaceChildren(h("span", { class: "ok" }, `Enrolled as face ${res.faces[0].face_id}`),
                                  ` · quality ${fmt(res.faces[0].quality, 2)}`);
      } catch (err) {
        it.state = "refused"; refused += 1;
        it.status.replaceChildren(h("span", { class: "bad" }, `Refused: ${errorText(err)}`));
      }
      refresh();
    }
    summary.replaceChildren(`${enrolled} enrolled, ${refused} refused. `,
                            enrolled && afterEnrol ? afterEnrol(subjectId) : "");
    if (enrolled) notify(`${enrolled} photo${enrolled === 1 ? "" : "s"} enrolled into ${subjectId}.`);
  } },
  h("h2", {}, subject ? "Add photos" : "Enrol a subject"),
  subject ? null : h("div", { class: "row" }, field("Subject id", sid, "letters, digits, . _ : @ -"), field("Name", name)),
  dropZone("Drop photos here, or choose them:", addFiles, { multiple: true, id: "enrol-photos" }),
  h("label", { class: "check" }, multiple, "Enrol the largest face of photos that show several"),
  previews,
  h("div", { class: "row" }, commit, h("button", { type: "button", onclick: () => {
    items = []; previews.replaceChildren(); summary.replaceChildren(); refresh();
  } }, "Clear")), summary);
  return form;
}

// ---------------------------------------------------------------------------------------------- one subject
async function subjectScreen(gallery, subjectId) {
  show(subjectId, h("p", { class: "muted" }, "Loading…"));
  let s;
  try { s = await api("GET", subjectPath(gallery, subjectId)); } catch (err) { return failed(err); }
  const writable = canWrite(gallery);
  const cards = await Promise.all(s.faces.map(async (f) => {
    const img = await thumbnail(gallery, subjectId, f.face_id, `Face ${f.face_id} of ${s.name || subjectId}`);
    img.classList.remove("thumb");
    return h("figure", { class: "face-card" }, img,
      h("figcaption", {}, `Face ${f.face_id}`, h("br"), h("span", { class: "muted" }, `${f.branch || ""} · ${when(f.created_at)}`)),
      h("button", { type: "button", class: "danger", disabled: !writable, "aria-label": `Delete face ${f.face_id}`,
                    onclick: async () => {
                      if (!(await confirmDialog(`Delete face ${f.face_id} of ${s.name || subjectId}?`))) return;
                      try {
                        await api("DELETE", `${subjectPath(gallery, subjectId)}/faces/${f.face_id}`);
                        notify(`Face ${f.face_id} deleted.`);
                        subjectScreen(gallery, subjectId);
                      } catch (err) { notify(errorText(err), true); }
                    } }, "Delete face"));
  }));
  const name = h("input", { id: "subject-name", name: "name", value: s.name || "", disabled: !writable });
  const meta = h("textarea", { id: "subject-metadata", name: "metadata", disabled: !writable, spellcheck: "false" });
  meta.value = JSON.stringify(s.metadata, null, 2);
  const metaError = h("p", { class: "bad", role: "alert" });
  const edit = h("form", { class: "panel", onsubmit: async (e) => {
    e.preventDefault();
    metaError.textContent = "";
    let metadata;
    try { metadata = JSON.parse(meta.value || "{}"); } catch (err) { metaError.textContent = `Metadata is not JSON: ${err.message}`; return; }
    try {
      await api("PATCH", subjectPath(gallery, subjectId), { json: { name: name.value, metadata } });
      notify("Saved.");
      subjectScreen(gallery, subjectId);
    } catch (err) { metaError.textContent = errorText(err); }
  } }, h("h2", {}, "Name and metadata"), field("Name", name), field("Metadata (JSON object)", meta), metaError,
  h("div", { class: "row" }, h("button", { type: "submit", class: "primary", disabled: !writable }, "Save"),
    h("button", { type: "button", class: "danger", disabled: !writable, onclick: async () => {
      if (!(await confirmDialog(`Delete subject ${s.name || subjectId} and its ${s.face_count} faces?`))) return;
      try {
        await api("DELETE", subjectPath(gallery, subjectId));
        notify(`Subject ${subjectId} deleted.`);
        location.hash = `#/g/${enc(gallery)}`;
      } catch (err) { notify(errorText(err), true); }
    } }, "Delete subject")));
  show(s.name || subjectId,
    h("p", {}, h("a", { href: `#/g/${enc(gallery)}` }, `← ${gallery}`), " · ", h("span", { class: "code" }, subjectId),
      ` · ${s.face_count} face${s.face_count === 1 ? "" : "s"}`),
    s.metadata_error ? h("p", { class: "warn" }, `Stored metadata not shown: ${s.metadata_error}`) : null,
    h("div", { class: "faces", id: "faces" }, cards), edit, writable ? enrolPanel(gallery, subjectId) : null);
}

// ---------------------------------------------------------------------------------------------- try it
async function gallerySelect(id) {
  const select = h("select", { id, name: "gallery", required: true });
  try {
    const list = (await api("GET", "/v1/galleries")).galleries;
    for (const g of list) select.append(h("option", { value: g.name }, `${g.name} (${g.subjects} subjects)`));
    if (!list.length) select.append(h("option", { value: "" }, "no gallery"));
  } catch (err) { notify(errorText(err), true); }
  return select;
}

async function identifyScreen() {
  const select = await gallerySelect("identify-gallery");
  const topK = h("input", { type: "number", id: "identify-top-k", min: 1, max: 20, value: 3 });
  const every = h("input", { type: "checkbox", id: "identify-all", checked: true });
  const out = h("div", { id: "identify-result", "aria-live": "polite" });
  const run = async ([file]) => {
    out.replaceChildren(h("p", { class: "muted" }, "Identifying…"));
    try {
      const r = await api("POST", "/v1/identify", { form: photoForm({ image: file, gallery: select.value,
        top_k: topK.value, all_faces: every.checked ? "true" : "false" }) });
      const labels = r.faces.map((f, i) => f.candidates.length
        ? `${i + 1}: ${f.candidates[0].name || f.candidates[0].subject_id}` : `${i + 1}: unknown`);
      const faces = r.faces.map((f, i) => h("section", { class: "panel" },
        h("h2", {}, `Face ${i + 1}`, " ", h("span", { class: "badge" }, `${Math.round(f.face.size)} px`),
          " ", h("span", { class: "badge" }, `quality ${fmt(f.face.quality, 2)}`)),
        f.skipped ? h("p", { class: "warn" }, `Not searched: ${f.skipped}`) : null,
        f.candidates.length
          ? h("div", { class: "scroll" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"),
              h("th", { scope: "col" }, "Subject id"), h("th", { scope: "col", class: "num" }, "Similarity"))),
            h("tbody", {}, f.candidates.map((c) => h("tr", {},
              h("td", {}, h("a", { href: `#/g/${enc(r.gallery)}/s/${enc(c.subject_id)}` }, c.name || c.subject_id)),
              h("td", { class: "code" }, c.subject_id), h("td", { class: "num" }, fmt(c.similarity)))))))
          : h("p", {}, `No candidate at or above the threshold ${fmt(r.threshold)}.`)));
      out.replaceChildren(await drawFaces(file, r.faces.map((f) => f.face), labels),
        h("p", {}, `Gallery ${r.gallery} · threshold ${fmt(r.threshold)} (similarity at or above it is a match)`),
        ...faces);
    } catch (err) { out.replaceChildren(h("p", { class: "bad", role: "alert" }, errorText(err))); }
  };
  show("Identify",
    h("p", {}, "Who is in this photo? Every face is searched in the gallery and shown with its best candidates."),
    h("div", { class: "row" }, field("Gallery", select), field("Candidates per face", topK),
      h("label", { class: "check" }, every, "Every face, not only the largest")),
    dropZone("Drop a photo here, or choose one:", run, { id: "identify-photo" }), out);
}

async function verifyScreen() {
  const files = { a: null, b: null };
  const slots = {};
  const out = h("div", { id: "verify-result", "aria-live": "polite" });
  const button = h("button", { type: "button", class: "primary", disabled: true, onclick: async () => {
    out.replaceChildren(h("p", { class: "muted" }, "Comparing…"));
    try {
      const r = await api("POST", "/v1/verify", { form: photoForm({ image_a: files.a, image_b: files.b }) });
      for (const [side, face] of [["a", r.face_a], ["b", r.face_b]]) {
        slots[side].replaceChildren(await drawFaces(files[side], [face], ["compared"], 400));
      }
      out.replaceChildren(h("div", { class: "panel" },
        h("p", { class: `meter ${r.match ? "ok" : "bad"}` }, r.match ? "Same person" : "Different people"),
        h("p", {}, `Similarity ${fmt(r.similarity)} against the threshold ${fmt(r.threshold)}: `,
          r.match ? "at or above it, a match." : "below it, no match.")));
    } catch (err) { out.replaceChildren(h("p", { class: "bad", role: "alert" }, errorText(err))); }
  } }, "Compare");
  const side = (key, label) => {
    slots[key] = h("div", {});
    return h("div", {}, dropZone(label, async ([file]) => {
      files[key] = file;
      slots[key].replaceChildren(await drawFaces(file, [], [], 400));
      button.disabled = !(files.a && files.b);
    }, { id: `verify-${key}` }), slots[key]);
  };
  show("Verify", h("p", {}, "Are these two photos the same person? The largest face of each is compared."),
    h("div", { class: "pair" }, side("a", "First photo:"), side("b", "Second photo:")),
    h("div", { class: "row" }, button), out);
}

async function detectScreen() {
  const out = h("div", { id: "detect-result", "aria-live": "polite" });
  const run = async ([file]) => {
    out.replaceChildren(h("p", { class: "muted" }, "Detecting…"));
    try {
      const r = await api("POST", "/v1/detect", { form: photoForm({ image: file }) });
      const head = h("tr", {}, ...[["#"], ["Score", "num"], ["Size (px)", "num"], ["Quality", "num"], ["Branch"],
                                   ["Box", "hide-narrow"]].map(([text, cls]) => h("th", { scope: "col", class: cls }, text)));
      const rows = r.faces.map((f, i) => h("tr", {},
        h("td", {}, i + 1), h("td", { class: "num" }, fmt(f.score)), h("td", { class: "num" }, Math.round(f.size)),
        h("td", { class: "num" }, fmt(f.quality, 2)), h("td", {}, `${f.branch} (${f.resolution} px)`),
        h("td", { class: "hide-narrow code" }, [f.box.x1, f.box.y1, f.box.x2, f.box.y2].map(Math.round).join(", "))));
      const plural = r.faces.length === 1 ? "" : "s";
      out.replaceChildren(await drawFaces(file, r.faces),
        h("p", {}, `${r.faces.length} face${plural} in ${r.image.width} × ${r.image.height}` +
          (r.rotation ? ` (found turned by ${r.rotation}°)` : "")),
        h("div", { class: "scroll" }, h("table", { id: "detect-faces" }, h("thead", {}, head), h("tbody", {}, rows))));
    } catch (err) { out.replaceChildren(h("p", { class: "bad", role: "alert" }, errorText(err))); }
  };
  show("Detect", h("p", {}, "Every face with its box, landmarks, size, quality and the embedder branch its size routes it to."),
    dropZone("Drop a photo here, or choose one:", run, { id: "detect-photo" }), out);
}

// ---------------------------------------------------------------------------------------------- operations
async function operationsScreen() {
  const list = h("ul", { class: "checks", id: "checks" });
  const headline = h("p", { class: "meter" });
  const load = async () => {
    let body;
    try {
      const res = await fetch("/readyz");
      body = await res.json();
    } catch (err) { headline.textContent = "Unreachable"; headline.className = "meter bad"; return; }
    headline.textContent = body.ready ? "Ready" : "Not ready";
    headline.className = `meter ${body.ready ? "ok" : "bad"}`;
    list.replaceChildren(...Object.entries(body.checks).map(([name, ok]) =>
      h("li", {}, h("span", { class: ok ? "ok" : "bad", "aria-hidden": "true" }, ok ? "✔ " : "✘ "),
        `${name}: ${ok ? "ok" : "failing"}`)));
  };
  await load();
  show("Operations", headline, list,
    h("div", { class: "row" }, h("button", { type: "button", onclick: load }, "Check again")),
    h("h2", {}, "Links"),
    h("ul", {}, h("li", {}, h("a", { href: "/metrics" }, "Prometheus metrics"),
      state.me && !state.me.metrics ? " (this key may not read them)" : " (needs the metrics key or a key for every gallery)"),
    h("li", {}, h("a", { href: "/docs" }, "API reference (OpenAPI)")), h("li", {}, h("a", { href: "/readyz" }, "Readiness (JSON)"))));
}

function failed(err) {
  show("Something went wrong", h("p", { class: "bad", role: "alert" }, errorText(err)),
       h("p", {}, h("a", { href: "#/galleries" }, "Back to the galleries")));
}

// ---------------------------------------------------------------------------------------------- routing
const ROUTES = [
  [/^#\/galleries$/, () => galleriesScreen(), "galleries"],
  [/^#\/g\/([^/?]+)\/s\/([^/?]+)$/, (m) => subjectScreen(decodeURIComponent(m[1]), decodeURIComponent(m[2])), "galleries"],
  [/^#\/g\/([^/?]+)(?:\?(.*))?$/, (m) => galleryScreen(decodeURIComponent(m[1]), new URLSearchParams(m[2] || "")), "galleries"],
  [/^#\/identify$/, () => identifyScreen(), "identify"],
  [/^#\/verify$/, () => verifyScreen(), "verify"],
  [/^#\/detect$/, () => detectScreen(), "detect"],
  [/^#\/operations$/, () => operationsScreen(), "operations"],
];

async function route() {
  const hash = location.hash || "#/galleries";
  if (!state.me) { signInScreen(); return; }
  for (const [pattern, screen, section] of ROUTES) {
    const m = hash.match(pattern);
    if (!m) continue;
    for (const a of document.querySelectorAll("nav a")) {
      if (a.dataset.section === section) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    await screen(m);
    main().focus({ preventScroll: true });
    return;
  }
  location.hash = "#/galleries";
}

async function start() {
  document.getElementById("signout").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", () => { notifyOnNavigate(); route(); });
  const saved = sessionStorage.getItem(KEY_STORAGE);
  try {
    await signIn(saved || "");  // a service without keys signs in at once
  } catch (err) {
    if (saved) sessionStorage.removeItem(KEY_STORAGE);
  }
  route();
}

function notifyOnNavigate() {
  state.noticeAge += 1;
  if (state.noticeAge > 1) document.getElementById("notice").textContent = "";
}

start();
