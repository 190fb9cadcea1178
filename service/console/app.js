// The web console: galleries and subjects with thumbnails, enrollment by drag and drop,
// identify and verify with the face box drawn and the decision explained. It calls only
// the public API (api.js); everything the service sends is shown as text, never as HTML.

import { api, ApiError, keyStore } from "./api.js";
import { drawImage, loadImage } from "./draw.js";

const $ = (id) => document.getElementById(id);
const SUBJECT_PAGE = 24;
const state = { gallery: null, subject: null, subjectsShown: 0, subjectsTotal: 0 };

// -- small helpers ---------------------------------------------------------------------

function element(tag, { text, className, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

function explain(error) {
  if (error instanceof ApiError) {
    const hint = error.status === 401 ? " (type a valid API key above)" : "";
    return `${error.code}: ${error.serviceMessage}${hint}`;
  }
  return String(error && error.message ? error.message : error);
}

/** Runs an event handler, showing what went wrong instead of failing silently. */
function guarded(handler) {
  return async (...args) => {
    try {
      await handler(...args);
    } catch (error) {
      showMessage(explain(error));
      console.error(error);
    }
  };
}

const number = (value, digits = 3) => (value === null || value === undefined
  ? "—" : Number(value).toFixed(digits));

function bandText(band) {
  return band ? band.label : "— (model without quality bands)";
}

const COLOURS = { match: "#22c55e", no_match: "#ef4444", unknown: "#ef4444", undecidable: "#f59e0b" };

function setFacts(prefix, facts) {
  for (const [name, value] of Object.entries(facts)) $(`${prefix}-${name}`).textContent = value;
}

/** Lets `zone` take dropped files and `input` chosen ones; both go to `handler`. */
function acceptFiles(zone, input, handler) {
  const run = guarded(handler);
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const files = [...(event.dataTransfer ? event.dataTransfer.files : [])];
    if (files.length) run(files);
  });
  input.addEventListener("change", () => {
    const files = [...input.files];
    input.value = "";
    if (files.length) run(files);
  });
}

const thumbnails = new Map(); // face id -> object URL

async function thumbnail(gallery, subject, face) {
  const key = `${gallery}/${face}`;
  if (!thumbnails.has(key)) {
    thumbnails.set(key, URL.createObjectURL(await api.faceImage(gallery, subject, face)));
  }
  return thumbnails.get(key);
}

function faceImage(gallery, subject, face, alt) {
  const img = element("img", { attrs: { alt, width: "56", height: "56" } });
  thumbnail(gallery, subject, face).then((url) => { img.src = url; }).catch(() => {
    img.alt = `${alt} (no stored image)`;
  });
  return img;
}

// -- key and model ---------------------------------------------------------------------

function renderKey() {
  $("key-status").textContent = keyStore.get()
    ? "key set (kept in this tab only)" : "no key (kept in this tab only)";
}

async function loadModel() {
  const ready = await api.ready();
  const model = ready.model ? `${ready.model.name} ${ready.model.version}` : "no model";
  $("model").textContent = `model: ${model} · ${ready.status}`;
}

// -- galleries and subjects ------------------------------------------------------------

async function allGalleries() {
  const galleries = [];
  for (;;) {
    const page = await api.listGalleries(galleries.length, 1000);
    galleries.push(...page.items);
    if (!page.items.length || galleries.length >= page.total) return galleries;
  }
}

async function loadGalleries() {
  const galleries = await allGalleries();
  $("galleries-total").textContent = `(${galleries.length})`;
  const list = $("gallery-list");
  list.replaceChildren();
  for (const gallery of galleries) {
    const button = element("button", {
      text: gallery.name,
      attrs: { type: "button", "data-gallery": gallery.name },
      className: gallery.name === state.gallery ? "selected" : "",
    });
    button.addEventListener("click", guarded(() => selectGallery(gallery.name)));
    const facts = `${gallery.subjects} subjects · ${gallery.faces} faces`
      + (gallery.compatible ? "" : " · other model: re-embed it");
    list.append(element("li", {}, [button, element("span", { text: facts, className: "muted" })]));
  }
  const select = $("identify-gallery");
  const chosen = select.value;
  select.replaceChildren(...galleries.map((g) => element("option", { text: g.name, attrs: { value: g.name } })));
  if (galleries.some((g) => g.name === chosen)) select.value = chosen;
  else if (state.gallery) select.value = state.gallery;
  if (!state.gallery && galleries.length) await selectGallery(galleries[0].name);
}

async function selectGallery(name) {
  state.gallery = name;
  state.subject = null;
  $("current-gallery").textContent = name;
  $("enroll-subject").textContent = "— pick a subject —";
  $("enroll-result").replaceChildren();
  $("subject-faces").replaceChildren();
  for (const button of $("gallery-list").querySelectorAll("button")) {
    button.classList.toggle("selected", button.dataset.gallery === name);
  }
  $("identify-gallery").value = name;
  $("subject-list").replaceChildren();
  state.subjectsShown = 0;
  await loadSubjects();
}

function subjectCard(subject) {
  const card = element("div", {
    className: "card",
    attrs: { role: "button", tabindex: "0", "data-subject": subject.id },
  });
  const picture = element("div", { className: "thumb" });
  card.append(
    picture,
    element("strong", { text: subject.id }),
    element("span", { text: subject.name || "", className: "muted" }),
    element("span", { text: `${subject.face_count} faces`, className: "count" }),
  );
  if (subject.face_count) {
    api.getSubject(state.gallery, subject.id).then((detail) => {
      if (detail.faces.length) {
        picture.append(faceImage(state.gallery, subject.id, detail.faces[0].id, subject.id));
      }
    }).catch(() => {});
  }
  const select = guarded(() => selectSubject(subject.id));
  card.addEventListener("click", select);
  card.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") select();
  });
  return card;
}

async function loadSubjects() {
  const page = await api.listSubjects(state.gallery, state.subjectsShown, SUBJECT_PAGE);
  const list = $("subject-list");
  for (const subject of page.items) list.append(subjectCard(subject));
  state.subjectsShown += page.items.length;
  state.subjectsTotal = page.total;
  renderSubjectsTotal();
}

function renderSubjectsTotal() {
  $("subjects-total").textContent = `(${state.subjectsShown} of ${state.subjectsTotal})`;
  $("subjects-more").hidden = state.subjectsShown >= state.subjectsTotal;
}

async function refreshSubject(id) {
  const detail = await api.getSubject(state.gallery, id);
  const old = $("subject-list").querySelector(`[data-subject="${CSS.escape(id)}"]`);
  const card = subjectCard(detail);
  if (old) {
    old.replaceWith(card);
  } else { // just created: the list is in creation order, so it goes last
    $("subject-list").append(card);
    state.subjectsShown += 1;
    state.subjectsTotal += 1;
    renderSubjectsTotal();
  }
  card.classList.toggle("selected", id === state.subject);
  if (id === state.subject) {
    $("subject-faces").replaceChildren(...detail.faces.map((face) => element("figure", {}, [
      faceImage(state.gallery, id, face.id, `face ${face.id}`),
      element("figcaption", { text: `#${face.id} · q ${number(face.quality.laplacian, 2)}` }),
    ])));
  }
}

async function selectSubject(id) {
  state.subject = id;
  $("enroll-subject").textContent = `${state.gallery} / ${id}`;
  $("enroll-result").replaceChildren();
  delete $("enroll-result").dataset.done;
  for (const card of $("subject-list").querySelectorAll(".card")) {
    card.classList.toggle("selected", card.dataset.subject === id);
  }
  await refreshSubject(id);
}

async function enrollOne(file) {
  try {
    const answer = await api.enroll(state.gallery, state.subject, [file]);
    if (answer.faces.length) {
      const face = answer.faces[0];
      return { file: file.name, ok: true, text: `enrolled as face ${face.id}, q ${number(face.quality.laplacian, 2)}` };
    }
    return { file: file.name, ok: false, text: answer.refused[0].reason };
  } catch (error) {
    if (error instanceof ApiError && error.code === "quality_refused") {
      return { file: file.name, ok: false, text: error.detail.refused[0].reason };
    }
    if (error instanceof ApiError && error.status < 500 && error.status !== 401) {
      return { file: file.name, ok: false, text: `${error.code}: ${error.serviceMessage}` };
    }
    throw error;
  }
}

async function enroll(files) {
  if (!state.gallery || !state.subject) {
    showMessage("pick a gallery and a subject to enroll into first");
    return;
  }
  showMessage("");
  const list = $("enroll-result");
  list.replaceChildren();
  delete list.dataset.done;
  const results = [];
  const queue = [...files];
  const worker = async () => {
    while (queue.length) {
      const file = queue.shift();
      const result = await enrollOne(file);
      results.push(result);
      list.append(element("li", {
        className: result.ok ? "accepted" : "refused",
        text: `${result.file}: ${result.text}`,
        attrs: { "data-file": result.file },
      }));
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  list.dataset.done = String(results.length);
  await refreshSubject(state.subject);
  await loadGalleries();
}

// -- identify and verify ---------------------------------------------------------------

// Each new question gets a ticket; an answer to an older one (still in flight when the
// user chose another image) is dropped rather than shown over the newer answer.
const tickets = { identify: 0, verify: 0 };

async function identify([file]) {
  const gallery = $("identify-gallery").value;
  if (!gallery) {
    showMessage("create a gallery and enroll faces first");
    return;
  }
  showMessage("");
  const ticket = ++tickets.identify;
  $("identify-result").hidden = true;
  const image = await loadImage(file);
  drawImage($("identify-canvas"), image);
  const answer = await api.identify(file, gallery, { top_k: $("identify-top-k").value });
  if (ticket !== tickets.identify) return;
  const best = answer.matches[0];
  const label = answer.decision === "match" ? `${best.subject} ${number(best.similarity, 2)}` : answer.decision;
  drawImage($("identify-canvas"), image, [{
    box: answer.face.box, landmarks: answer.face.landmarks, label, colour: COLOURS[answer.decision],
  }]);
  setFacts("identify", {
    decision: answer.decision,
    subject: best ? best.subject : "— (empty gallery)",
    similarity: best ? number(best.similarity) : "—",
    threshold: number(answer.threshold),
    far: answer.far ?? "— (a threshold was given)",
    band: bandText(answer.band),
    quality: number(answer.quality.laplacian, 2),
    alignment: `${answer.face.alignment} (faces in the image: ${answer.face.faces_found})`,
    reason: answer.reason || "—",
  });
  $("identify-decision").className = `decision ${answer.decision}`;
  const result = $("identify-result");
  result.dataset.decision = answer.decision;
  result.hidden = false;
  const rows = answer.matches.map((match) => element("tr", { attrs: { "data-subject": match.subject } }, [
    element("td", {}, [faceImage(gallery, match.subject, match.face, match.subject)]),
    element("td", { text: match.subject }),
    element("td", { text: number(match.similarity) }),
    element("td", { text: number(match.threshold) }),
    element("td", { text: match.decision, className: `decision ${match.decision}` }),
  ]));
  $("identify-matches").querySelector("tbody").replaceChildren(...rows);
  $("identify-matches").hidden = !rows.length;
}

const pair = [null, null];

async function verifySide(index, [file]) {
  pair[index] = { file, image: await loadImage(file) };
  drawImage($(`verify-canvas${index + 1}`), pair[index].image, [], 260);
  $("verify-result").hidden = true;
  if (pair[0] && pair[1]) await verify();
}

function clearPair() {
  pair.fill(null);
  tickets.verify += 1;
  $("verify-result").hidden = true;
  for (const index of [1, 2]) {
    const canvas = $(`verify-canvas${index}`);
    canvas.width = 0;
    canvas.height = 0;
    delete canvas.dataset.faces;
  }
}

async function verify() {
  showMessage("");
  const ticket = ++tickets.verify;
  const answer = await api.verify(pair[0].file, pair[1].file);
  if (ticket !== tickets.verify) return;
  const colour = COLOURS[answer.decision];
  answer.faces.forEach((face, i) => {
    drawImage($(`verify-canvas${i + 1}`), pair[i].image, [{
      box: face.box, landmarks: face.landmarks, colour,
      label: `q ${number(answer.quality[i].laplacian, 2)}`,
    }], 260);
  });
  setFacts("verify", {
    decision: answer.decision,
    similarity: number(answer.similarity),
    threshold: number(answer.threshold),
    far: answer.far ?? "— (a threshold was given)",
    band: bandText(answer.band),
    quality: answer.quality.map((q) => number(q.laplacian, 2)).join(" and "),
    reason: answer.reason || "—",
  });
  $("verify-decision").className = `decision ${answer.decision}`;
  const result = $("verify-result");
  result.dataset.decision = answer.decision;
  result.hidden = false;
}

// -- wiring ----------------------------------------------------------------------------

function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  }
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.id !== name;
}

async function start() {
  renderKey();
  $("key-form").addEventListener("submit", guarded(async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    $("api-key").value = "";
    if (key) keyStore.set(key);
    renderKey();
    showMessage("");
    await loadGalleries();
  }));
  $("key-forget").addEventListener("click", () => {
    keyStore.clear();
    renderKey();
    state.gallery = null;
    $("gallery-list").replaceChildren();
    $("subject-list").replaceChildren();
  });
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", guarded(async () => {
      showTab(tab.dataset.tab);
      if (keyStore.get()) await loadGalleries();
    }));
  }
  $("gallery-form").addEventListener("submit", guarded(async (event) => {
    event.preventDefault();
    const name = $("gallery-name").value.trim();
    await api.createGallery(name);
    $("gallery-name").value = "";
    state.gallery = name;
    await loadGalleries();
    await selectGallery(name);
  }));
  $("subject-form").addEventListener("submit", guarded(async (event) => {
    event.preventDefault();
    if (!state.gallery) {
      showMessage("pick or create a gallery first");
      return;
    }
    const id = $("subject-id").value.trim();
    await api.createSubject(state.gallery, id, $("subject-name").value.trim());
    $("subject-id").value = "";
    $("subject-name").value = "";
    await refreshSubject(id);
    await selectSubject(id);
    await loadGalleries();
  }));
  $("subjects-more").addEventListener("click", guarded(loadSubjects));
  acceptFiles($("enroll-drop"), $("enroll-files"), enroll);
  acceptFiles($("identify-drop"), $("identify-file"), identify);
  acceptFiles($("verify-drop1"), $("verify-file1"), (files) => verifySide(0, files));
  acceptFiles($("verify-drop2"), $("verify-file2"), (files) => verifySide(1, files));
  $("verify-clear").addEventListener("click", clearPair);
  await guarded(loadModel)();
  if (keyStore.get()) await guarded(loadGalleries)();
  document.body.dataset.ready = "true";
}

start();
