// The agent's home: the held case and the team's cases follow the event stream; Resolve and availability
// go through the API.
import { AGENT_EVENTS, CASE_EVENTS, announce, api, debounce, listen } from "./console.js";

const casePart = document.getElementById("case-part");
const teamPart = document.getElementById("team-part");
const buttons = document.querySelector("[data-agent]");
const agentId = buttons.dataset.agent;
const baseTitle = "Returns desk";
let refreshing = Promise.resolve();

async function refresh() {
  const response = await fetch("/console/agent/parts", { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401 || response.redirected) {
    location.assign("/login");
    return;
  }
  if (!response.ok) return;
  const parts = await response.json();
  teamPart.innerHTML = parts.team_html;
  showStatus(parts.status);
  const held = parts.case_id || "";
  if (held !== casePart.dataset.case) {
    casePart.dataset.case = held;
    casePart.innerHTML = parts.case_html;
    announce(parts.announce);
    document.title = held ? `New case · ${baseTitle}` : `No case · ${baseTitle}`;
  }
}

function queueRefresh() {
  refreshing = refreshing.then(refresh, refresh);
  return refreshing;
}

function showStatus(status) {
  for (const button of buttons.querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.status === status));
  }
  const now = document.getElementById("availability-now");
  now.textContent = status === "available" ? "You are available and get the next case of your team." : "You are away: no new case comes to you.";
}

buttons.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-status]");
  if (!button) return;
  const error = document.getElementById("availability-error");
  error.textContent = "";
  const result = await api("PATCH", `/api/v1/agents/${agentId}`, { status: button.dataset.status });
  if (!result.ok) {
    error.textContent = `Could not change your availability: ${result.message}`;
    return;
  }
  showStatus(result.data.status);
  await queueRefresh();
});

casePart.addEventListener("submit", async (event) => {
  const form = event.target.closest("#resolve-form");
  if (!form) return;
  event.preventDefault();
  const error = form.querySelector("#resolve-error");
  const button = form.querySelector("button");
  error.textContent = "";
  button.disabled = true;
  const resolution = form.querySelector("#resolution").value.trim();
  const result = await api("POST", `/api/v1/cases/${form.dataset.case}/resolve`, resolution ? { resolution } : {});
  button.disabled = false;
  if (!result.ok) {
    error.textContent = `Could not resolve: ${result.message}`;
    return;
  }
  announce("Case resolved.");
  await queueRefresh();
  document.getElementById("your-case-h").focus();
});

listen("/api/v1/events", [...CASE_EVENTS, ...AGENT_EVENTS], debounce(queueRefresh, 50), queueRefresh);
