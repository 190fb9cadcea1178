// The console's only way to the service: its public HTTP API, with the key the user
// typed (kept in sessionStorage, so it is gone when the tab closes).

const KEY_NAME = "lrfr.apiKey";

export const keyStore = {
  get: () => sessionStorage.getItem(KEY_NAME) || "",
  set: (key) => sessionStorage.setItem(KEY_NAME, key),
  clear: () => sessionStorage.removeItem(KEY_NAME),
};

/** An error answer of the service: its status, code and message. */
export class ApiError extends Error {
  constructor(status, code, message, detail) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.serviceMessage = message;
  }
}

const CODES = {
  400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
  409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
  422: "unprocessable", 429: "rate_limited", 503: "unavailable",
};

async function errorOf(response) {
  let detail = null;
  try {
    detail = (await response.json()).detail;
  } catch {
    detail = response.statusText;
  }
  let code = CODES[response.status] || `http_${response.status}`;
  let message = String(detail ?? response.statusText);
  if (Array.isArray(detail)) {
    code = "invalid_request";
    message = detail.map((p) => `${(p.loc || []).join(".")}: ${p.msg}`).join("; ");
  } else if (detail && typeof detail === "object") {
    code = detail.code || code;
    message = detail.message || JSON.stringify(detail);
  }
  return new ApiError(response.status, code, message, detail);
}

/**
 * One request. `form`: an object of fields (File values are uploaded; arrays repeat the
 * field); `json`: a JSON body; `as`: "json" (default), "blob" or "none"; `tolerate`:
 * error statuses whose body is the answer (/readyz says "not ready" with a 503).
 */
export async function call(
  method, path, { query, json, form, as = "json", key, tolerate = [] } = {},
) {
  const headers = {};
  const apiKey = key ?? keyStore.get();
  if (apiKey) headers["X-API-Key"] = apiKey;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = new FormData();
    for (const [name, value] of Object.entries(form)) {
      if (value === undefined || value === null || value === "") continue;
      for (const item of Array.isArray(value) ? value : [value]) {
        if (item instanceof File) body.append(name, item, item.name);
        else body.append(name, String(item));
      }
    }
  }
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) url.searchParams.set(name, value);
  const response = await fetch(url, { method, headers, body, credentials: "omit" });
  if (!response.ok && !tolerate.includes(response.status)) throw await errorOf(response);
  if (as === "blob") return response.blob();
  if (as === "none" || response.status === 204) return null;
  return response.json();
}

const seg = encodeURIComponent;

/** The operations the console uses, by name. */
export const api = {
  ready: () => call("GET", "/readyz", { tolerate: [503] }),
  listGalleries: (offset = 0, limit = 100) =>
    call("GET", "/v1/galleries", { query: { offset, limit } }),
  createGallery: (name) => call("POST", "/v1/galleries", { json: { name } }),
  deleteGallery: (name) => call("DELETE", `/v1/galleries/${seg(name)}`, { as: "none" }),
  listSubjects: (gallery, offset = 0, limit = 100) =>
    call("GET", `/v1/galleries/${seg(gallery)}/subjects`, { query: { offset, limit } }),
  createSubject: (gallery, id, name) =>
    call("POST", `/v1/galleries/${seg(gallery)}/subjects`, {
      json: name ? { id, name } : { id },
    }),
  getSubject: (gallery, subject) =>
    call("GET", `/v1/galleries/${seg(gallery)}/subjects/${seg(subject)}`),
  deleteSubject: (gallery, subject) =>
    call("DELETE", `/v1/galleries/${seg(gallery)}/subjects/${seg(subject)}`, { as: "none" }),
  enroll: (gallery, subject, files) =>
    call("POST", `/v1/galleries/${seg(gallery)}/subjects/${seg(subject)}/faces`, {
      form: { images: files },
    }),
  faceImage: (gallery, subject, face) =>
    call("GET", `/v1/galleries/${seg(gallery)}/subjects/${seg(subject)}/faces/${face}/image`, {
      as: "blob",
    }),
  identify: (image, gallery, options = {}) =>
    call("POST", "/v1/identify", { form: { image, gallery, ...options } }),
  verify: (image1, image2, options = {}) =>
    call("POST", "/v1/verify", { form: { image1, image2, ...options } }),
};
