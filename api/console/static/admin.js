// The admin's home: the queue per team follows the event stream.
import { AGENT_EVENTS, CASE_EVENTS, debounce, listen } from "./console.js";

const part = document.getElementById("queue-part");

async function refresh() {
  const response = await fetch("/console/admin/queue", { credentials: "same-origin" });
  if (response.status === 401 || response.redirected) {
    location.assign("/login");
    return;
  }
  if (response.ok) part.innerHTML = await response.text();
}

listen("/api/v1/events", [...CASE_EVENTS, ...AGENT_EVENTS], debounce(refresh, 300), refresh);
setInterval(refresh, 60000); // the chart moves on even when nothing happens
