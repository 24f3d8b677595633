// Shared by the console's pages: calls to the API (session cookie + CSRF token), errors in words, one event
// stream per page, and the page's polite announcements.

export const CASE_EVENTS = [
  "case.filed", "case.reserved", "case.assigned", "case.resolved", "case.cancelled", "case.requeued",
  "case.offered", "case.declined", "case.offer_missed", "case.escalated", "case.overdue", "case.transferred",
  "case.reopened",
];
export const AGENT_EVENTS = ["agent.created", "agent.updated", "agent.removed"];

export function csrf() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// The API's error, as a sentence a person can act on.
export function inWords(status, body) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((e) => `${(e.loc || []).slice(-1)[0] || "request"}: ${e.msg}`).join("; ");
  }
  if (status === 0) return "the server cannot be reached; check the connection and try again";
  return `the server answered ${status}; try again`;
}

export async function api(method, url, body) {
  let response;
  try {
    response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf() },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    return { ok: false, status: 0, data: null, message: inWords(0, null) };
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (response.status === 401) {
    location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
  }
  return { ok: response.ok, status: response.status, data, message: response.ok ? "" : inWords(response.status, data) };
}

export function announce(text) {
  const region = document.getElementById("announce");
  if (region) region.textContent = text;
}

export function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

// The page's one event stream; `data-live` on <body> says whether it is connected. The browser reconnects
// by itself after a network error; a refused stream (an answer other than 200: the session ended, or the
// server is not ready) is closed, so it is opened again a little later, and `onOpen` (which reloads the
// page's live parts, and sends a signed-out person to /login) runs meanwhile.
export function listen(url, types, onEvent, onOpen) {
  let source = null;
  const connect = () => {
    source = new EventSource(url);
    for (const type of types) source.addEventListener(type, onEvent);
    source.addEventListener("open", () => {
      document.body.dataset.live = "on";
      if (onOpen) onOpen();
    });
    source.addEventListener("error", () => {
      document.body.dataset.live = "off";
      if (source.readyState === EventSource.CLOSED) {
        if (onOpen) onOpen();
        setTimeout(connect, 5000);
      }
    });
  };
  connect();
  addEventListener("pagehide", () => source.close());
}
