// The customer's tracking page: the status follows the case's own event stream; Cancel return until resolved.
import { CASE_EVENTS, api, debounce, listen } from "./console.js";

const box = document.getElementById("tracking");
const token = box.dataset.token;
const status = document.getElementById("status");
const resolutionLine = document.getElementById("resolution-line");
const cancel = document.getElementById("cancel");
const error = document.getElementById("track-error");

function show(tracked) {
  if (status.textContent !== tracked.status_text) status.textContent = tracked.status_text;
  resolutionLine.hidden = !tracked.resolution;
  document.getElementById("resolution").textContent = tracked.resolution || "";
  cancel.hidden = tracked.status === "resolved" || tracked.status === "cancelled";
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

listen(`/api/v1/track/${token}/events`, CASE_EVENTS, debounce(refresh, 50), refresh);
// The place in line moves with other customers' cases, whose events this stream does not carry.
setInterval(() => {
  if (!cancel.hidden) refresh();
}, 30000);
