// The customer's tracking page: the status follows the case's own event stream; Cancel return until resolved.
import { CASE_EVENTS, api, debounce, listen } from "./console.js";

const box = document.getElementById("tracking");
const token = box.dataset.token;
const status = document.getElementById("status");
const resolutionLine = document.getElementById("resolution-line");
const cancel = document.getElementById("cancel");
const error = document.getElementById("track-error");
const reopen = document.getElementById("reopen");

function show(tracked) {
  if (status.textContent !== tracked.status_text) status.textContent = tracked.status_text;
  resolutionLine.hidden = !tracked.resolution;
  document.getElementById("resolution").textContent = tracked.resolution || "";
  cancel.hidden = tracked.status === "resolved" || tracked.status === "cancelled";
  const windowMs = Number(box.dataset.windowDays) * 86400000;
  const at = tracked.resolved_at && Date.parse(/[Zz]|[+-]\d\d:\d\d$/.test(tracked.resolved_at) ? tracked.resolved_at : `${tracked.resolved_at}Z`);
  reopen.hidden = !(tracked.status === "resolved" && at && at + windowMs > Date.now());
}

async function refresh() {
  const result = await api("GET", `/api/v1/track/${token}`);
  if (result.ok) show(result.data);
  else error.textContent = `Could not read your return: ${result.message}`;
}

cancel.addEventListener("click", async () => {
  error.textContent = "";
  cancel.disabled = true;
  const result = await api("POST", `/api/v1/track/${token}/cancel`, {});
  cancel.disabled = false;
  if (!result.ok) {
    error.textContent = `Could not cancel: ${result.message}`;
    return;
  }
  show(result.data);
});

reopen.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  const button = reopen.querySelector("button");
  button.disabled = true;
  const reason = reopen.querySelector("#reopen-reason").value.trim();
  const result = await api("POST", `/api/v1/track/${token}/reopen`, reason ? { reason } : {});
  button.disabled = false;
  if (!result.ok) {
    error.textContent = `Could not reopen: ${result.message}`;
    return;
  }
  reopen.reset();
  show(result.data);
});

listen(`/api/v1/track/${token}/events`, CASE_EVENTS, debounce(refresh, 50), refresh);
// The place in line moves with other customers' cases, whose events this stream does not carry.
setInterval(() => {
  if (!cancel.hidden) refresh();
}, 30000);
